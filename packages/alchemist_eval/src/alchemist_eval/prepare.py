"""Benchmark preparation: from the released MSRVTT-Personalization annotations to a benchmark folder.

``prepare_benchmark`` cuts each annotated clip, writes its ground-truth frames, the entity crops and masks from the
annotations, the inpainted background, the conditioning lists and (optionally) the ground-truth embeddings, shard by
shard, as the tables described in benchmark.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from alchemist_data.media import VideoError, cut_clip, decode_image, encode_jpg, encode_png, frame_at_time
from alchemist_eval.annotations import Annotation, load_annotations
from alchemist_eval.benchmark import (
    EXTRA_TABLES,
    GT_EMBEDDINGS,
    GT_FRAMES,
    MODES,
    Benchmark,
    RowSource,
    _background_ids,
    _light_entities,
    build_conditioning,
    embeddings_rows,
)

__all__ = ["prepare_benchmark"]


# An entity row before its mask is read: a tag that has only a face crop stays undetected ("face_only").
_ENTITY_ROW_UNTIL_MASKED = {
    "is_detected": False,
    "drop_reason": "face_only",
    "has_face": False,
    "is_random_model": False,
}


def _prepare_clip(
    ann: Annotation, videos_dir: Path, root: Path, inpainter: Any, bg_cfg: Any, profile: str, shard: str
) -> dict[str, list[dict[str, Any]]]:
    from alchemist_data.benchmark_rules import foreground_mask, paste_box_mask, rgba_crop

    rel = f"videos/{ann.clip_id}.mp4"
    clip = cut_clip(videos_dir / ann.video, root / rel, ann.start_s, ann.end_s, ann.resolution_wh)
    fps = clip.fps
    duration = ann.end_s - ann.start_s
    fractions = (0.05, 0.50, 0.95)
    # GT frames go through JPEG like the official frame{1,2,3}.jpg (PIL's default quality, 75); crops and embeddings
    # use the decoded JPEGs.
    jpgs = [encode_jpg(frame_at_time(clip, f * duration), quality=75) for f in fractions]
    frames = [decode_image(j, "RGB") for j in jpgs]
    H, W = frames[0].shape[:2]
    out: dict[str, list[dict[str, Any]]] = {"gt_frames": [], "entities": [], "backgrounds": [], "clips": []}
    for k, j in enumerate(jpgs):
        out["gt_frames"].append(
            {
                "clip_id": ann.clip_id,
                "frame_index": k,
                "frame_time_s": ann.start_s + fractions[k] * duration,
                "image_jpg": j,
            }
        )
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    subjects = set(ann.subject) | set(ann.subject_with_face)
    for tag, entries in ann.masks.items():
        category = "subject" if tag in subjects or tag not in ann.object else "object"
        for e in entries:
            key = (tag, e.frame_index)
            row = rows.setdefault(
                key,
                dict(
                    clip_id=ann.clip_id,
                    entity_word=tag,
                    category=category,
                    frame_index=e.frame_index,
                    frame_time_s=ann.start_s + fractions[e.frame_index] * duration,
                    frame_width_px=W,
                    frame_height_px=H,
                    **_ENTITY_ROW_UNTIL_MASKED,
                ),
            )
            frame = frames[e.frame_index]
            x0, y0, x1, y1 = e.box_xyxy
            if e.is_face_crop:
                # PIL ``frame.crop(box)`` as the official embedding script (black outside the image, if ever)
                crop = (
                    np.asarray(Image.fromarray(frame).crop((x0, y0, x1, y1)))
                    if x1 > x0 and y1 > y0
                    else np.zeros((0, 0, 3), np.uint8)
                )
                row.update(
                    has_face=True,
                    face_box_xyxy_px=e.box_xyxy,
                    face_score=None,
                    face_crop_png=encode_png(crop) if crop.size else None,
                )
            else:
                rgba = rgba_crop(frame, e.mask, e.box_xyxy)
                m = rgba[..., 3] > 0  # the annotation's mask cut (or padded) to the crop
                row.update(
                    is_detected=True,
                    drop_reason=None,
                    box_xyxy_px=e.box_xyxy,
                    box_score=None,
                    mask_iou_score=None,
                    mask_area_frac=float(m.sum()) / float(H * W),
                    mask_png=encode_png(m.astype(np.uint8) * 255),
                    crop_png=encode_png(rgba),
                )
    out["entities"] = [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1]))]
    # Background: union of every frame-2 mask (face crops included, as the official loop does), dilated, filled.
    full = [
        paste_box_mask(e.mask, e.box_xyxy, (H, W))
        for entries in ann.masks.values()
        for e in entries
        if e.frame_index == 1
    ]
    fg = foreground_mask(full, (H, W), kernel_px=bg_cfg.dilate_kernel_px, iterations=bg_cfg.dilate_iterations)
    plate = inpainter.inpaint(frames[1], fg, bg_cfg.prompt) if fg.any() else frames[1]
    out["backgrounds"].append(
        {
            "clip_id": ann.clip_id,
            "background_word": ann.background[0] if ann.background else None,
            "frame_time_s": ann.start_s + 0.5 * duration,
            "width_px": W,
            "height_px": H,
            "foreground_area_frac": float(fg.mean()),
            "inpaint_backend": bg_cfg.backend,
            "image_jpg": encode_jpg(plate, 95),
            "foreground_mask_png": encode_png(fg.astype(np.uint8) * 255),
        }
    )
    detected = {e["entity_word"] for e in out["entities"] if e["is_detected"]}
    out["clips"].append(
        {
            "clip_id": ann.clip_id,
            "video": rel,
            "caption": ann.caption,
            "start_s": ann.start_s,
            "end_s": ann.end_s,
            "duration_s": duration,
            "fps": fps,
            "width_px": W,
            "height_px": H,
            "ref_times_s": [ann.start_s + f * duration for f in fractions],
            "subject_words": ann.subject,
            "object_words": ann.object,
            "background_words": ann.background,
            "num_entities_detected": len(detected),
            "has_random_models": False,
            "profile": profile,
            "shard": shard,
        }
    )
    return out


def prepare_benchmark(
    annotations: str | Path,
    videos_dir: str | Path,
    output: str | Path,
    profile: str = "offline",
    overrides: dict[str, str] | None = None,
    shard_size: int = 16,
    embeddings: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Build a benchmark folder from the released annotations (zip or folder) and the MSR-VTT videos.

    Resumable: shards already committed are skipped. A clip whose source video is missing or unreadable becomes a
    ``rejects`` row (stage ``prepare``) and the run goes on. Returns the summary written to ``benchmark.json``.
    """
    from alchemist_data.models.inpaint import build_inpainter
    from alchemist_data.models.presets import vision_models
    from alchemist_data.writer import RunWriter, environment_versions, shard_name
    from alchemist_eval.models import eval_profile
    from alchemist_eval.scorer import Scorer

    anns = load_annotations(annotations)
    videos_dir, root = Path(videos_dir), Path(output)
    if not videos_dir.is_dir():
        raise ValueError(f"--videos {str(videos_dir)!r} is not a folder: pass the unpacked MSR-VTT video folder")
    writer = RunWriter(root)
    writer.prepare()
    for name in EXTRA_TABLES:
        (root / name).mkdir(exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    done = writer.done_shards()
    shards = [anns[i : i + shard_size] for i in range(0, len(anns), shard_size)]
    inpainter, scorer = None, None
    cfg = eval_profile(profile, overrides)
    bg_cfg = vision_models(profile).background
    signature = json.dumps(cfg.signature(), sort_keys=True)
    t0 = time.time()
    for s, chunk in enumerate(shards):
        name = shard_name(s)
        if name in done:
            if progress:
                progress(len(chunk), len(anns))
            continue
        if inpainter is None:
            inpainter = build_inpainter(bg_cfg, device=cfg.device)  # --set device=... applies to it too
            inpainter.setup()
        tables: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("clips", "entities", "backgrounds", "gt_frames", "rejects")
        }
        for ann in chunk:
            try:
                part = _prepare_clip(ann, videos_dir, root, inpainter, bg_cfg, profile, name)
            except (VideoError, ValueError, OSError) as err:
                reason = getattr(err, "reason", "unreadable")
                tables["rejects"].append(
                    {
                        "video": str(videos_dir / ann.video),
                        "clip_id": ann.clip_id,
                        "stage": "prepare",
                        "reason": reason,
                        "detail": str(err),
                        "caption": ann.caption,
                        "shard": name,
                    }
                )
                continue
            for k, v in part.items():
                tables[k].extend(v)
            if progress:
                progress(1, len(anns))
        from alchemist_data import schema

        arrow = {
            k: pa.Table.from_pylist(tables[k], schema=schema.TABLES[k])
            for k in ("clips", "entities", "backgrounds", "rejects")
        }
        cond = build_conditioning(
            arrow["clips"],
            _light_entities(RowSource.of(arrow["entities"])),
            _background_ids(RowSource.of(arrow["backgrounds"])),
        )
        extra = {"gt_frames": pa.Table.from_pylist(tables["gt_frames"], schema=GT_FRAMES), "conditioning": cond}
        if embeddings and arrow["clips"].num_rows:
            if scorer is None:
                scorer = Scorer(cfg, ("text", "video", "subject", "face"))
                scorer.setup(ground_truth_only=True)
            bench = Benchmark(
                root,
                arrow["clips"],
                RowSource.of(arrow["entities"]),
                RowSource.of(arrow["backgrounds"]),
                RowSource.of(extra["gt_frames"]),
                cond,
                None,
                {},
            )
            ids = arrow["clips"]["clip_id"].to_pylist()
            gts = bench.ground_truth(ids, "subject")
            rows = []
            for cid, emb in zip(ids, scorer.gt_embeddings(gts), strict=True):
                rows.extend(embeddings_rows(cid, emb, signature))
            extra["gt_embeddings"] = pa.Table.from_pylist(rows, schema=GT_EMBEDDINGS)
        for tname, table in extra.items():
            final = root / tname / f"{name}.parquet"
            tmp = final.with_name(f".{name}.parquet.tmp-{os.getpid()}")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, final)
        writer.commit_shard(name, arrow, num_input_rows=len(chunk))
    bench = Benchmark.load(root)
    info = {
        "kind": "msrvtt_personalization",
        "annotations": str(annotations),
        "videos": str(videos_dir),
        "profile": profile,
        "models": cfg.signature(),
        "random_models": cfg.random_models,
        "num_annotations": len(anns),
        "num_clips": bench.clips.num_rows,
        "num_rejects": sum(m["counts"].get("rejects", 0) for m in writer.done_shards().values()),
        "modes": {m: len(bench.clip_ids(m)) for m in MODES},
        "background_backend": bg_cfg.backend,
        "seconds": round(time.time() - t0, 2),
        "versions": environment_versions(),
    }
    (root / "benchmark.json").write_text(json.dumps(info, indent=2, default=str))
    writer.write_run_json({"kind": "benchmark", **info})
    return info
