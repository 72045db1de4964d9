"""The report of a curated run (or a benchmark folder): counts, settings, distributions, rejects, sampled clips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alchemist_data.report import charts, draw
from alchemist_data.report.page import (
    ImageWriter,
    cards,
    esc,
    figure,
    fmt,
    page,
    settings_block,
    table,
    write_page,
)
from alchemist_data.report.source import RunSource
from alchemist_data.schema import REFERENCE_FRACTIONS

HIST_BINS = 20
REJECT_EXAMPLES = 3
# Distributions over the detected entity rows: (column, title); all three live in [0, 1].
DISTRIBUTIONS = (
    ("mask_area_frac", "mask area (fraction of the frame)"),
    ("box_score", "GroundingDINO box score"),
    ("mask_iou_score", "SAM predicted IoU"),
)


def _histogram(src: RunSource, column: str) -> tuple[list[int], int, int]:
    """Counts in HIST_BINS bins over [0, 1] (values outside go to the edge bins), the number of values and how many
    of them lay outside."""
    x = f"CAST({column} AS DOUBLE)"
    rows = src.sql(
        f"SELECT least(greatest(floor({x} * {HIST_BINS}), 0), {HIST_BINS - 1})::INT AS b, count(*) AS n,"
        f" count_if({x} < 0 OR {x} > 1) AS outside FROM entities WHERE is_detected AND {column} IS NOT NULL"
        " GROUP BY 1"
    )
    counts = [0] * HIST_BINS
    for r in rows:
        counts[r["b"]] = r["n"]
    return counts, sum(counts), sum(r["outside"] for r in rows)


def _distributions(src: RunSource) -> str:
    svgs = []
    for column, title in DISTRIBUTIONS:
        counts, n, outside = _histogram(src, column)
        note = f"{n:,} detected entity frames" if n else "no values in this run"
        if outside:
            note += f"; {outside:,} outside [0, 1] in the edge bins"
        svgs.append(charts.histogram_svg(counts, 0.0, 1.0, title, note))
    reasons = src.sql("SELECT stage || '/' || reason AS r, count(*) AS n FROM rejects GROUP BY 1 ORDER BY n DESC, r")
    svgs.append(charts.bars_svg([r["r"] for r in reasons][:12], [r["n"] for r in reasons][:12], "rejects by reason"))
    return '<div class="charts">' + "".join(svgs) + "</div>"


def _rejects(src: RunSource) -> str:
    reasons = src.sql("SELECT stage, reason, count(*) AS n FROM rejects GROUP BY 1, 2 ORDER BY n DESC, stage, reason")
    examples = src.sql(
        "SELECT stage, reason, clip_id, video, detail FROM (SELECT *, row_number() OVER (PARTITION BY stage, reason "
        "ORDER BY md5(coalesce(clip_id, '') || coalesce(video, ''))) AS k FROM rejects) "
        f"WHERE k <= {REJECT_EXAMPLES} ORDER BY stage, reason, k"
    )
    by_reason: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in examples:
        by_reason.setdefault((e["stage"], e["reason"]), []).append(e)
    rows = []
    for r in reasons:
        ex = by_reason.get((r["stage"], r["reason"]), [])
        cell = "<br>".join(f"<b>{esc(e['clip_id'])}</b> {esc(e['video'])}: {esc(e['detail'])}" for e in ex)
        rows.append((r["stage"], r["reason"], r["n"], cell))
    return table(
        ["stage", "reason", "clips", f"examples (up to {REJECT_EXAMPLES})"], rows, raw=[False, False, False, True]
    )


def _frames(
    src: RunSource,
    clip: dict[str, Any],
    frames_cfg: dict[str, Any],
    gt: dict[int, bytes],
    size: tuple[int, int] | None,
) -> tuple[list[np.ndarray | None], str | None]:
    """The clip's reference frames as curation saw them: a benchmark's stored GT frames, else decoded again from the
    video with the run's frame settings (the tables keep boxes and crops, not whole frames)."""
    from alchemist_data.media import VideoError, decode_image, reference_frames

    if gt:
        frames: list[np.ndarray | None] = [decode_image(gt[k]) if k in gt else None for k in range(3)]
    else:
        try:
            _, _, decoded = reference_frames(
                src.video_path(clip["video"]),
                clip["start_s"],
                clip["end_s"],
                fractions=tuple(frames_cfg.get("fractions", REFERENCE_FRACTIONS)),
                max_side_px=int(frames_cfg.get("max_side_px", 0)),
                seek=frames_cfg.get("seek", "exact"),
            )
        except (VideoError, ValueError, OSError) as err:
            return [None, None, None], f"reference frames not shown: {err}"
        frames = list(decoded)
    if size is not None:  # boxes are in the coordinates of the frames curation used
        from PIL import Image

        frames = [
            f
            if f is None or (f.shape[1], f.shape[0]) == size
            else np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
            for f in frames
        ]
    return frames, None


def _clip_card(
    src: RunSource,
    images: ImageWriter,
    n: int,
    clip: dict[str, Any],
    ents: list[dict[str, Any]],
    background: dict[str, Any] | None,
    gt: dict[int, bytes],
    frames_cfg: dict[str, Any],
) -> str:
    ents = sorted(ents, key=lambda e: (e["frame_index"], e["category"] != "subject", e["entity_word"]))
    words = list(clip.get("subject_words") or []) + list(clip.get("object_words") or [])
    colours = draw.word_colours(words + [e["entity_word"] for e in ents])
    size = None
    if ents and ents[0].get("frame_width_px") and ents[0].get("frame_height_px"):
        size = (int(ents[0]["frame_width_px"]), int(ents[0]["frame_height_px"]))
    frames, problem = _frames(src, clip, frames_cfg, gt, size)
    times = list(clip.get("ref_times_s") or [None] * 3)
    fractions = frames_cfg.get("fractions", REFERENCE_FRACTIONS)
    figs = []
    for k, frame in enumerate(frames):
        label = f"{fractions[k] * 100:.0f} % frame"
        if k < len(times) and times[k] is not None:
            label += f" · {times[k]:.2f} s"
        if frame is None:
            w, h = size or (int(clip.get("width_px") or 320), int(clip.get("height_px") or 240))
            pic = draw.placeholder(w, h, problem or "frame not available")
        else:
            pic = draw.draw_detections(frame, [e for e in ents if e["frame_index"] == k], colours)
        figs.append(figure(images.array(f"c{n:04d}-f{k}", pic), "frame", label))
        if k == 1 and background is not None and background.get("image_jpg"):
            fg = background.get("foreground_area_frac")
            cap = "background plate (middle frame, foreground inpainted"
            cap += f", {fg * 100:.0f} % of it)" if fg is not None else ")"
            figs.append(figure(images.encoded(f"c{n:04d}-bg", background["image_jpg"]), "frame", cap))
    crops = []
    for e in ents:
        if e.get("crop_png"):
            cap = f"{e['entity_word']} · {fractions[e['frame_index']] * 100:.0f} %"
            for key, name in (("box_score", "box"), ("mask_iou_score", "IoU")):
                if e.get(key) is not None:
                    cap += f" · {name} {e[key]:.2f}"
            if e.get("mask_area_frac") is not None:
                cap += f" · {e['mask_area_frac'] * 100:.1f} % area"
            crops.append(figure(images.encoded(f"c{n:04d}-e{len(crops)}", e["crop_png"]), "crop", cap, css="cropfig"))
    faces = [
        figure(
            images.encoded(f"c{n:04d}-face{i}", e["face_crop_png"]),
            "crop",
            f"face of {e['entity_word']} · {fractions[e['frame_index']] * 100:.0f} %",
            css="cropfig",
        )
        for i, e in enumerate(x for x in ents if x.get("has_face") and x.get("face_crop_png"))
    ]
    meta = [esc(clip.get("video")), f"{fmt(clip.get('start_s'), 2)}–{fmt(clip.get('end_s'), 2)} s"]
    if clip.get("width_px"):
        meta.append(f"{clip['width_px']}×{clip['height_px']}")
    for key in ("subject_words", "object_words", "background_words"):
        meta.append(f"{key.split('_')[0]}: {esc(', '.join(clip.get(key) or []) or '–')}")
    meta.append(f"{fmt(clip.get('num_entities_detected'))} entity words detected")
    if problem:
        meta.append(f'<span class="warn-text">{esc(problem)}</span>')
    crop_row = "".join(crops) or '<p class="empty">no reference crop (no entity passed grounding and SAM)</p>'
    return (
        f'<section class="clip" id="clip-{n}"><h3>{esc(clip["clip_id"])}</h3>'
        f'<p class="caption">{esc(clip.get("caption"))}</p><p class="meta">{" · ".join(meta)}</p>'
        f'<div class="row">{"".join(figs)}</div><div class="row">{crop_row}{"".join(faces)}</div></section>'
    )


def curated_report(
    src: RunSource, out_dir: Path, max_clips: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Write ``out_dir/index.html`` for a curated run or benchmark folder; returns what it showed."""
    run = src.read_json("run.json") or {}
    config = run.get("config") or {}
    frames_cfg = config.get("frames") or {}
    stats = src.stats()
    total = src.sql("SELECT count(*) AS n FROM clips")[0]["n"]
    sample = src.sql(f"SELECT * FROM clips ORDER BY md5(clip_id), clip_id LIMIT {int(max_clips)}")
    ids = [c["clip_id"] for c in sample]
    shards = {c.get("shard") for c in sample}
    ents: dict[str, list[dict[str, Any]]] = {}
    for e in src.rows("entities", ids, shards):
        ents.setdefault(e["clip_id"], []).append(e)
    bgs = {b["clip_id"]: b for b in src.rows("backgrounds", ids, shards)}
    gt: dict[str, dict[int, bytes]] = {}
    if src.kind == "benchmark":
        for r in src.rows("gt_frames", ids, shards):
            gt.setdefault(r["clip_id"], {})[int(r["frame_index"])] = r["image_jpg"]

    images = ImageWriter(out_dir)
    clip_html = []
    for n, clip in enumerate(sample):
        clip_html.append(
            _clip_card(
                src,
                images,
                n,
                clip,
                ents.get(clip["clip_id"], []),
                bgs.get(clip["clip_id"]),
                gt.get(clip["clip_id"], {}),
                frames_cfg,
            )
        )
        if progress is not None:
            progress(n + 1, len(sample))

    num_rejects = src.sql("SELECT count(*) AS n FROM rejects")[0]["n"]
    ent_counts = src.sql("SELECT count(*) AS n, count_if(is_detected) AS d, count_if(has_face) AS f FROM entities")[0]
    elapsed = run.get("elapsed_s", run.get("seconds"))
    summary = cards(
        [
            ("clips", total),
            ("rejected clips", num_rejects),
            (
                "manifest rows" if src.kind == "curated" else "annotations",
                run.get("num_manifest_rows", run.get("num_annotations")),
            ),
            ("entity frame rows", ent_counts["n"]),
            ("detected", ent_counts["d"]),
            ("with a face", ent_counts["f"]),
            ("background plates", src.sql("SELECT count(*) AS n FROM backgrounds")[0]["n"]),
            ("committed shards", src.num_shards()),
            ("seconds to build", f"{elapsed:.1f}" if isinstance(elapsed, int | float) else None),
        ]
    )
    warn = ""
    if run.get("has_random_models"):
        warn = (
            '<div class="warn">GroundingDINO and SAM ran with <b>random weights</b> in this run (profile '
            f"{esc(run.get('profile'))}): boxes, masks and crops show the plumbing, not real detections.</div>"
        )
    shown = (
        f"Showing {len(sample):,} of {total:,} clips: the first {int(max_clips):,} by md5(clip_id), the same "
        "clips every time. <code>--max-clips N</code> changes the limit (each clip adds about a dozen pictures; "
        "a few hundred keep the page quick to open)."
    )
    tables = "".join(
        f"<div><h3>{esc(title)}</h3>" + table(list(rows[0]), [list(r.values()) for r in rows]) + "</div>"
        for title, rows in stats.items()
        if rows and title in ("entities per category", "drop reasons (entity frames)", "backgrounds")
    )
    nav = (
        '<nav><a href="#distributions">distributions</a><a href="#rejects">rejects</a><a href="#clips">clips</a>'
        '<a href="#settings">settings</a></nav>'
    )
    body = (
        nav
        + warn
        + summary
        + '<h2 id="distributions">Distributions</h2>'
        + _distributions(src)
        + f'<div class="tables" style="margin-top:10px">{tables}</div>'
        + f'<h2 id="rejects">Rejects ({num_rejects:,})</h2>'
        + _rejects(src)
        + f'<h2 id="clips">Clips</h2><p class="meta">{shown}</p>'
        + "".join(clip_html)
        + '<h2 id="settings">Settings</h2>'
        + settings_block(run or None)
    )
    kind = "Benchmark" if src.kind == "benchmark" else "Curated run"
    when = run.get("started_at")
    sub = f"{src.root} · profile {run.get('profile', '?')}" + (f" · {run['status']}" if run.get("status") else "")
    if isinstance(when, int | float):
        import time

        sub += " · started " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    index = write_page(out_dir, page(f"{kind}: {Path(src.base).name}", sub, body))
    return {
        "kind": src.kind,
        "index": str(index),
        "num_clips": total,
        "num_clips_shown": len(sample),
        "num_images": images.count,
    }
