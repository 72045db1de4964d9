"""A tiny curated run written from scratch (PyAV video + schema-valid Parquet), for tests and the bench.

It has the layout of a real curation run (``clips/``, ``entities/``, ``backgrounds/``, ``rejects/`` Parquet
files with the contract schemas, ``_done/part-00000.json``), so the model's data path is exercised for real
without running the curation pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alchemist_data import schema
from alchemist_data.media import encode_jpg, encode_png, write_video
from alchemist_model.configs import VIDEO_FPS

CAPTIONS = (
    ("A man in a red shirt walks a dog across the park.", ["man", "dog"], ["shirt"], "park"),
    ("A woman rides a horse along the beach.", ["woman", "horse"], [], "beach"),
    ("A cat plays with a ball in the kitchen.", ["cat"], ["ball"], "kitchen"),
    ("A boy throws a ball to a dog on the grass.", ["boy", "dog"], ["ball"], "grass"),
)
COLORS = ((220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (160, 60, 200))


def _frames(num_frames: int, size: tuple[int, int], seed: int, num_shapes: int) -> np.ndarray:
    """Smoothly moving coloured discs on a soft gradient: learnable, so a tiny model's loss can fall."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width * 120 + 60, yy / height * 120 + 60, np.full_like(xx, 140.0)], -1)
    starts = rng.uniform(0.2, 0.8, size=(num_shapes, 2)) * [width, height]
    speeds = rng.uniform(-1.0, 1.0, size=(num_shapes, 2))
    out = []
    for t in range(num_frames):
        frame = base.copy()
        for k in range(num_shapes):
            cx, cy = starts[k] + speeds[k] * t
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) * 0.18) ** 2
            frame[inside] = COLORS[(seed + k) % len(COLORS)]
        out.append(frame)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _crop(color: tuple[int, int, int], size: int, seed: int) -> np.ndarray:
    """RGBA crop of a disc (alpha = mask) with a little texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.42) ** 2
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = np.clip(np.array(color) + rng.normal(0, 12, size=(size, size, 3)), 0, 255)
    rgba[..., 3] = np.where(inside, 255, 0)
    return rgba


def write_tiny_curated_run(
    out_dir: str | Path,
    num_clips: int = 3,
    size: tuple[int, int] = (80, 60),
    seconds: float = 1.0,
    fps: float = VIDEO_FPS,  # training's sampling rate, so no frame is dropped or repeated
    seed: int = 0,
    faces: bool = False,
    sizes: list[tuple[int, int]] | None = None,
    durations_s: list[float] | None = None,
) -> Path:
    """Write a curated run with ``num_clips`` clips, detected entities (3 frames each) and background plates.

    ``faces``: subjects get face crops (RGB, as curation stores them); ``sizes`` / ``durations_s``: per-clip video
    size and length (cycled), for the multi-resolution / multi-duration buckets.
    """
    out = Path(out_dir)
    for folder in ("videos", *schema.TABLES, "_done"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    clips, entities, backgrounds = [], [], []
    for i in range(num_clips):
        caption, subjects, objects, background_word = CAPTIONS[i % len(CAPTIONS)]
        clip_id = f"clip{i:04d}"
        video = out / "videos" / f"{clip_id}.mp4"
        clip_size = sizes[i % len(sizes)] if sizes else size
        clip_s = durations_s[i % len(durations_s)] if durations_s else seconds
        num_frames = int(round(clip_s * fps))
        frames = _frames(num_frames, clip_size, seed + i, num_shapes=len(subjects) + len(objects))
        # x264 at its default preset gives different bytes run to run; ultrafast + 1 thread is reproducible,
        # which the golden losses need.
        write_video(video, frames, fps=fps, threads=1, options={"preset": "ultrafast"})
        ref_times = [clip_s * f for f in schema.REFERENCE_FRACTIONS]
        clips.append(
            {
                "clip_id": clip_id,
                "video": str(video),
                "caption": caption,
                "start_s": 0.0,
                "end_s": clip_s,
                "duration_s": clip_s,
                "fps": fps,
                "width_px": clip_size[0],
                "height_px": clip_size[1],
                "ref_times_s": ref_times,
                "subject_words": subjects,
                "object_words": objects,
                "background_words": [background_word],
                "num_entities_detected": len(subjects) + len(objects),
                "has_random_models": True,
                "profile": "tiny",
                "shard": "part-00000",
            }
        )
        for k, word in enumerate(subjects + objects):
            for frame_index, time_s in enumerate(ref_times):
                crop = _crop(COLORS[(seed + i + k) % len(COLORS)], 24 + 4 * frame_index, seed * 100 + i * 10 + k)
                has_face = faces and word in subjects
                face = np.full((12 + 2 * frame_index, 10 + 2 * frame_index, 3), (224, 172, 140), dtype=np.uint8)
                entities.append(
                    {
                        "clip_id": clip_id,
                        "entity_word": word,
                        "category": "subject" if word in subjects else "object",
                        "frame_index": frame_index,
                        "frame_time_s": time_s,
                        "frame_width_px": clip_size[0],
                        "frame_height_px": clip_size[1],
                        "is_detected": True,
                        "drop_reason": None,
                        "box_xyxy_px": [4, 4, 4 + crop.shape[1], 4 + crop.shape[0]],
                        "box_score": 0.9,
                        "mask_iou_score": 0.95,
                        "mask_area_frac": 0.1,
                        "mask_png": encode_png(crop[..., 3]),
                        "crop_png": encode_png(crop),
                        "has_face": has_face,
                        "face_box_xyxy_px": [6, 6, 6 + face.shape[1], 6 + face.shape[0]] if has_face else None,
                        "face_score": 0.9 if has_face else None,
                        "face_crop_png": encode_png(face) if has_face else None,
                        "is_random_model": True,
                    }
                )
        plate = frames[num_frames // 2].copy()
        backgrounds.append(
            {
                "clip_id": clip_id,
                "background_word": background_word,
                "frame_time_s": clip_s / 2,
                "width_px": clip_size[0],
                "height_px": clip_size[1],
                "foreground_area_frac": 0.2,
                "inpaint_backend": "opencv",
                "image_jpg": encode_jpg(plate, quality=90),
                "foreground_mask_png": None,
            }
        )
    tables = {"clips": clips, "entities": entities, "backgrounds": backgrounds, "rejects": []}
    for name, rows in tables.items():
        table = pa.Table.from_pylist(rows, schema=schema.TABLES[name])
        pq.write_table(table, out / name / "part-00000.parquet")
    (out / "_done" / "part-00000.json").write_text(json.dumps({"shard": "part-00000", "rows": num_clips}))
    (out / "run.json").write_text(json.dumps({"profile": "tiny", "written_by": "alchemist_model.testing"}))
    return out
