"""The report of an ``alchemist eval`` output: benchmark scores, their spread, and generated vs ground-truth frames.

It reads what the eval runner writes (``scores.parquet``, ``summary.json``, ``eval_config.json``) and the benchmark
folder named there, through :class:`RunSource` like every other read; curation code never imports alchemist_eval.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alchemist_data.report import charts, draw
from alchemist_data.report.page import ImageWriter, cards, esc, img, page, table, write_page
from alchemist_data.report.source import NotAReportableFolderError, RunSource, sample_key
from alchemist_data.schema import REFERENCE_FRACTIONS

#: per-video score columns of scores.parquet and the benchmark's names for them
METRICS = {"text_s": "Text-S", "video_s": "Vid-S", "subject_s": "Subj-S", "face_s": "Face-S", "dynamic_d": "Dync-D"}
THUMB_WIDTH_PX = 112
MAX_TABLE_ROWS = 5000


def _generated_frames(row: dict[str, Any], videos_dir: str | None) -> list[np.ndarray]:
    """The generated video's frames at 5/50/95 % (the benchmark's GT positions)."""
    from alchemist_data.media import reference_frames

    video = row.get("video")
    if not video:
        return []
    if not os.path.isabs(video) and "://" not in video and not os.path.exists(video) and videos_dir:
        video = os.path.join(videos_dir, os.path.basename(video))  # eval_config keeps the folder resolved
    _, _, frames = reference_frames(video)
    return list(frames)


def _ground_truth(bench: RunSource | None, ids: list[str]) -> dict[str, list[np.ndarray]]:
    """GT frames of these clips: the benchmark's stored frames, else decoded from the curated run's videos."""
    from alchemist_data.media import VideoError, decode_image, reference_frames

    if bench is None or not ids:
        return {}
    listing = ", ".join("'" + c.replace("'", "''") + "'" for c in ids)
    clips = {
        c["clip_id"]: c
        for c in bench.sql(f"SELECT clip_id, video, start_s, end_s, shard FROM clips WHERE clip_id IN ({listing})")
    }
    out: dict[str, list[np.ndarray]] = {}
    stored: dict[str, dict[int, bytes]] = {}
    for r in bench.rows("gt_frames", list(clips), {c.get("shard") for c in clips.values()}):
        stored.setdefault(r["clip_id"], {})[int(r["frame_index"])] = r["image_jpg"]
    for cid, c in clips.items():
        if cid in stored:
            out[cid] = [decode_image(stored[cid][k]) for k in sorted(stored[cid])]
            continue
        try:
            out[cid] = list(reference_frames(bench.video_path(c["video"]), c["start_s"], c["end_s"])[2])
        except (VideoError, ValueError, OSError):
            continue
    return out


def _thumbs(images: ImageWriter, stem: str, frames: list[np.ndarray], what: str) -> str:
    if not frames:
        return '<span class="empty">none</span>'
    tags = [
        img(
            images.array(f"{stem}-{k}", draw.thumbnail(f, THUMB_WIDTH_PX), quality=80),
            "thumb",
            f"{what} {REFERENCE_FRACTIONS[k] * 100:.0f} %",
            f"{what}, {REFERENCE_FRACTIONS[k] * 100:.0f} % frame",
        )
        for k, f in enumerate(frames[:3])
    ]
    return '<div class="thumbs">' + "".join(tags) + "</div>"


def _short(value: Any, limit: int = 300) -> Any:
    if isinstance(value, str | int | float) or value is None:
        return value
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def eval_report(
    src: RunSource, out_dir: Path, max_clips: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    summary = src.read_json("summary.json") or {}
    settings = src.read_json("eval_config.json") or {}
    rows = sorted(src.read_parquet("scores.parquet").to_pylist(), key=lambda r: r["clip_id"])
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    bench_dir = settings.get("benchmark") or summary.get("benchmark")
    bench, bench_problem = None, None
    if bench_dir:
        try:
            bench = RunSource(bench_dir)
        except NotAReportableFolderError as err:
            bench_problem = f"ground-truth frames not shown: {err}"
    sample = sorted(rows, key=lambda r: sample_key(r["clip_id"]))[:max_clips]
    gt = _ground_truth(bench, [r["clip_id"] for r in sample])
    images = ImageWriter(out_dir)
    sampled_rows = []
    for n, r in enumerate(sample):
        try:
            generated = _generated_frames(r, settings.get("videos")) if r["status"] == "ok" else []
        except Exception:  # a video that scored but no longer decodes must not stop the report
            generated = []
        sampled_rows.append(
            [
                r["clip_id"],
                r["status"],
                *[r.get(m) for m in metrics],
                _thumbs(images, f"v{n:04d}-gen", generated, "generated"),
                _thumbs(images, f"v{n:04d}-gt", gt.get(r["clip_id"], []), "ground truth"),
            ]
        )
        if progress is not None:
            progress(n + 1, len(sample))
    if bench is not None:
        bench.close()

    names = [METRICS[m] for m in metrics]
    ok = [r for r in rows if r["status"] == "ok"]
    hists = []
    for m in metrics:
        vals = np.array([r[m] for r in ok if r.get(m) is not None and not np.isnan(r[m])], float)
        if len(vals):
            lo, hi = float(vals.min()), float(vals.max())
            if lo >= 0.0 and hi <= 1.0:  # Vid-S, Subj-S, Face-S, Dync-D: the metric's own range reads best
                lo, hi = 0.0, 1.0
            elif hi == lo:
                lo, hi = lo - 0.5, hi + 0.5
            counts = np.histogram(vals, bins=20, range=(lo, hi))[0].tolist()
            hists.append(
                charts.histogram_svg(
                    counts, lo, hi, f"{METRICS[m]} per video", f"{len(vals):,} readable videos (missing ones score 0)"
                )
            )
    scores = summary.get("scores") or {}
    body = cards(
        [
            ("videos", summary.get("num_videos", len(rows))),
            ("missing / unreadable", summary.get("num_missing")),
            *[(k, v) for k, v in scores.items()],
        ]
    )
    if summary.get("random_models"):
        body += (
            f'<div class="warn">Scored with random models ({esc(", ".join(summary["random_models"]))}): the '
            "numbers are not comparable to the paper.</div>"
        )
    if summary.get("num_left_out"):
        body += (
            f'<div class="warn">{summary["num_left_out"]:,} clips of the mode had no generated video and were '
            "left out (--only-generated): these are not benchmark numbers.</div>"
        )
    if bench_problem:
        body += f'<div class="warn">{esc(bench_problem)}</div>'
    body += '<h2>Distributions</h2><div class="charts">' + "".join(hists) + "</div>"
    body += (
        f'<h2>Videos with frames</h2><p class="meta">{len(sample):,} of {len(rows):,} videos, the first '
        f"{max_clips:,} by md5(clip_id); <code>--max-clips N</code> changes the limit. Frames at 5/50/95 % of "
        "the generated video, and the benchmark's ground truth.</p>"
    )
    body += table(
        ["clip", "status", *names, "generated", "ground truth"],
        sampled_rows,
        raw=[False, False, *[False] * len(names), True, True],
    )
    listed = rows[:MAX_TABLE_ROWS]
    more = f" (the first {MAX_TABLE_ROWS:,})" if len(rows) > MAX_TABLE_ROWS else ""
    body += f"<h2>All per-video scores{more}</h2>"
    body += table(
        ["clip", "status", *names, "detail"],
        [[r["clip_id"], r["status"], *[r.get(m) for m in metrics], r.get("detail") or ""] for r in listed],
    )
    body += "<h2>Settings</h2>" + table(["setting", "value"], [[k, _short(v)] for k, v in settings.items()])
    title = f"Evaluation: {summary.get('method') or Path(summary.get('videos', src.base)).name}"
    sub = f"{src.root} · {summary.get('mode', '?')} mode · profile {summary.get('profile', '?')}"
    index = write_page(out_dir, page(title, sub, body))
    return {
        "kind": "eval",
        "index": str(index),
        "num_clips": len(rows),
        "num_clips_shown": len(sample),
        "num_images": images.count,
    }
