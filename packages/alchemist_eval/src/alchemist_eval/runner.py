"""``alchemist eval``: score a folder of generated videos against a benchmark, locally or on Ray, resumably.

* Generated videos are looked up by benchmark clip id (``<clip_id>.mp4``, or .mov/.mkv/.webm/.avi).
* Every clip of the mode is scored, whatever the number of workers. The official code truncates the dataset to a
  multiple of the number of GPUs (``images_count // world_size * world_size``); we do not (docs/eval.md).
* A missing or unreadable generated video is reported by name, scored 0 on every requested metric and counted in
  the averages, so skipping a video never raises a score; the summary says how many there were.
* Work is split into fixed chunks of clip ids (in storage order); each finished chunk is written to ``parts/``
  atomically, and a re-run with the same settings skips the chunks already written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from alchemist_eval import metrics as M
from alchemist_eval.benchmark import Benchmark
from alchemist_eval.models import EvalConfig, eval_profile
from alchemist_eval.scorer import MODE_METRICS, SCORE_COLUMNS, Job, Scorer

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")

SCORES = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # ok | missing_file | empty_file | unreadable | no_frames ...
        pa.field("detail", pa.string()),
        pa.field("num_frames", pa.int32()),  # frames actually scored
        pa.field("fps", pa.float64()),
        pa.field("width_px", pa.int32()),
        pa.field("height_px", pa.int32()),
        *(pa.field(column, pa.float64()) for column in SCORE_COLUMNS.values()),  # text_s ... dynamic_d
        pa.field("num_tags", pa.int32()),
        pa.field("num_tag_detections", pa.int32()),  # (frame, tag) pairs that passed GDINO + SAM + validity
        pa.field("num_face_frames", pa.int32()),
    ]
)


class EvalConfigMismatchError(ValueError):
    pass


def find_generated(videos_dir: Path, clip_id: str) -> str | None:
    for ext in VIDEO_EXTENSIONS:
        p = videos_dir / f"{clip_id}{ext}"
        if p.exists():
            return str(p)
    return None


def _chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _write_part(out: Path, index: int, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=SCORES)
    final = out / "parts" / f"part-{index:05d}.parquet"
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, final)


class _Worker:
    """What a Ray actor holds: one Scorer, its models loaded once."""

    def __init__(self, cfg: EvalConfig, metrics: tuple[str, ...], num_frames: int | None, threads: int = 0):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.scorer = Scorer(cfg, metrics, num_frames)
        self.scorer.setup()

    def score(self, index: int, jobs: list[Job]) -> tuple[int, list[dict[str, Any]]]:
        return index, self.scorer.score(jobs)


def run_eval(
    videos: str | Path,
    benchmark: str | Path,
    mode: str = "subject",
    metrics: list[str] | None = None,
    num_frames: int | None = None,
    profile: str = "offline",
    overrides: dict[str, str] | None = None,
    output: str | Path | None = None,
    num_workers: int = 0,
    ray_address: str | None = None,
    chunk_size: int = 8,
    only_generated: bool = False,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score ``videos`` against ``benchmark``; writes ``scores.parquet``, ``summary.json``; returns the summary.

    ``num_workers`` 0 scores in this process; N > 0 (or a ``ray_address``) uses a pool of N Ray actors.
    ``only_generated`` restricts the run to the clips that have a generated video (a partial run or the demo): the
    averages are then NOT benchmark numbers, and the summary says how many clips were left out.
    """
    videos_dir = Path(videos)
    if not videos_dir.is_dir():
        raise ValueError(f"generated videos folder {str(videos_dir)!r} does not exist")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"--num-frames must be at least 1, got {num_frames}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    bench = Benchmark.load(benchmark)
    ids = bench.clip_ids(mode)
    if not ids:
        raise ValueError(f"benchmark {str(benchmark)!r} has no clip in {mode!r} mode")
    num_in_mode = len(ids)
    if only_generated:
        ids = [c for c in ids if find_generated(videos_dir, c) is not None]
        if not ids:
            raise ValueError(f"no generated video in {str(videos_dir)!r} is named after a {mode!r}-mode clip id")
    metrics = list(metrics or MODE_METRICS.get(mode, MODE_METRICS["subject"]))
    cfg = eval_profile(profile, overrides)
    notice = cfg.random_model_notice()
    if notice:
        log(f"WARNING: {notice}")
    out = Path(output) if output is not None else videos_dir / f"eval_{mode}"
    (out / "parts").mkdir(parents=True, exist_ok=True)
    signature = json.dumps(cfg.signature(), sort_keys=True)
    settings = {
        "benchmark": str(Path(benchmark).resolve()),
        "videos": str(videos_dir.resolve()),
        "mode": mode,
        "metrics": [m for m in SCORE_COLUMNS if m in metrics],
        "num_frames": num_frames,
        "chunk_size": chunk_size,
        "clip_ids": ids if only_generated else len(ids),
        "models": json.loads(signature),
    }
    cfg_path = out / "eval_config.json"
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        if previous != settings:
            diff = sorted(k for k in settings if previous.get(k) != settings[k])
            raise EvalConfigMismatchError(
                f"{str(out)!r} holds results made with other settings ({', '.join(diff)} differ); pass another "
                "--output or delete that folder to start over"
            )
    else:
        cfg_path.write_text(json.dumps(settings, indent=2))

    # Chunks follow the storage order (shard, clip id): each chunk's ground truth comes from one or two shard files.
    chunks = _chunks(bench.storage_order(ids), chunk_size)
    pending = [i for i in range(len(chunks)) if not (out / "parts" / f"part-{i:05d}.parquet").exists()]
    done_videos = sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(pending))
    if progress:
        progress(done_videos, len(ids))
    if done_videos:
        log(f"resuming: {done_videos} of {len(ids)} videos already scored in {out / 'parts'}")

    def jobs_of(i: int) -> list[Job]:
        gts = bench.ground_truth(chunks[i], mode, signature)
        return [Job(gt, find_generated(videos_dir, gt.clip_id)) for gt in gts]

    t0 = time.time()
    if pending and num_workers <= 0 and ray_address is None:
        worker = _Worker(cfg, tuple(metrics), num_frames)
        for i in pending:
            _, rows = worker.score(i, jobs_of(i))
            _write_part(out, i, rows)
            if progress:
                progress(len(chunks[i]), len(ids))
    elif pending:
        _run_ray(
            cfg,
            tuple(metrics),
            num_frames,
            pending,
            jobs_of,
            chunks,
            out,
            max(1, num_workers),
            ray_address,
            progress,
            len(ids),
        )
    elapsed = time.time() - t0

    parts = sorted((out / "parts").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p, schema=SCORES) for p in parts]).sort_by("clip_id")
    pq.write_table(table, out / "scores.parquet")
    summary = summarize(table, [m for m in SCORE_COLUMNS if m in metrics])
    summary.update(
        mode=mode,
        profile=profile,
        num_frames=num_frames,
        benchmark=str(benchmark),
        videos=str(videos_dir),
        output=str(out),
        random_models=cfg.random_models,
        seconds=round(elapsed, 2),
        num_scored_this_run=sum(len(chunks[i]) for i in pending),
        num_clips_in_mode=num_in_mode,
        num_left_out=num_in_mode - len(ids),
        is_full_benchmark=len(ids) == num_in_mode,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_ray(cfg, metrics, num_frames, pending, jobs_of, chunks, out, num_workers, ray_address, progress, total):
    import ray
    from ray.util import ActorPool

    from alchemist_data.raycluster import connect

    started = connect(ray_address, num_workers, object_store_mb=200, log_to_driver=False)
    try:
        actor_cls = ray.remote(num_cpus=1)(_Worker)
        actors = [actor_cls.remote(cfg, metrics, num_frames, 1) for _ in range(min(num_workers, len(pending)))]
        pool = ActorPool(actors)
        queue = list(pending)
        # Keep at most two chunks per actor in flight, so the driver never holds the whole benchmark's ground truth.
        while queue and len(queue) > len(pending) - 2 * len(actors):
            i = queue.pop(0)
            pool.submit(lambda a, v: a.score.remote(*v), (i, jobs_of(i)))
        while pool.has_next():
            i, rows = pool.get_next_unordered()
            _write_part(out, i, rows)
            if progress:
                progress(len(chunks[i]), total)
            if queue:
                j = queue.pop(0)
                pool.submit(lambda a, v: a.score.remote(*v), (j, jobs_of(j)))
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()


def summarize(table: pa.Table, metrics: list[str]) -> dict[str, Any]:
    """Benchmark averages: every clip of the mode counts, misses included (scored 0); NaN/null = not applicable."""
    rows = table.to_pylist()
    missing = [
        {"clip_id": r["clip_id"], "status": r["status"], "detail": r["detail"]} for r in rows if r["status"] != "ok"
    ]
    scores = {}
    scored_only = {}
    for m in metrics:
        col = SCORE_COLUMNS[m]
        scores[M.METRIC_NAMES[m]] = M.nanmean([r[col] for r in rows])
        scored_only[M.METRIC_NAMES[m]] = M.nanmean([r[col] for r in rows if r["status"] == "ok"])
    short = [r["clip_id"] for r in rows if r["status"] == "ok" and r["detail"]]
    return {
        "scores": scores,
        "scores_over_readable_videos": scored_only,
        "num_videos": len(rows),
        "num_missing": len(missing),
        "missing": missing,
        "num_short_videos": len(short),
        "short_videos": short,
    }


def format_table(summary: dict[str, Any], title: str = "MSRVTT-Personalization") -> Any:
    """The paper-style table (rich) of a summary."""
    from rich.table import Table

    t = Table(
        title=f"{title} — {summary.get('mode', '')} mode ({summary['num_videos']} videos, "
        f"{summary['num_missing']} missing)"
    )
    t.add_column("Method")
    names = list(summary["scores"])
    for n in names:
        t.add_column(n, justify="right")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    t.add_row(
        str(summary.get("method", Path(summary.get("videos", "generated")).name)),
        *[fmt(summary["scores"][n]) for n in names],
    )
    return t
