"""Curation throughput (tiny profile: local runner vs Ray with 1 and 2 workers) and DuckDB over 1M entity rows."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import row


def _curate_time(manifest: Path, out: Path, runner: str, workers: int) -> tuple[float, float, int]:
    """(end-to-end seconds, steady-state clips/s, clips). Steady state runs from the first committed shard to the
    last, so model loading in each actor (the same for any number of workers) is not counted as throughput."""
    from alchemist_data.runner import CurateOptions, Reporter, curate

    commits: list[tuple[float, int]] = []

    class Timeline(Reporter):
        def shard_done(self, shard: str, counts: dict[str, int], num_input_rows: int) -> None:
            commits.append((time.perf_counter(), num_input_rows))

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    info = curate(
        CurateOptions(manifest=str(manifest), output=str(out), profile="tiny", runner=runner, num_workers=workers),
        reporter=Timeline(enabled=False),
    )
    total = time.perf_counter() - t0
    n = info["counts"].get("clips", 0) + info["counts"].get("rejects", 0)
    commits.sort()
    steady = sum(c for _, c in commits[1:]) / (commits[-1][0] - commits[0][0])
    return total, steady, n


def curation_rows(quick: bool) -> list[dict]:
    import ray

    from alchemist_data.sample_data import write_sample_corpus

    tmp = Path(tempfile.mkdtemp(prefix="alchemist-bench-"))
    n_clips = 32 if quick else 96
    manifest = write_sample_corpus(tmp / "corpus", num_clips=n_clips, seed=1)
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    try:
        _curate_time(manifest, tmp / "warm", "local", 1)  # warm the page cache and lazy imports for every variant
        t_local, s_local, n = _curate_time(manifest, tmp / "local", "local", 1)
        t_ray1, s_ray1, _ = _curate_time(manifest, tmp / "ray1", "ray", 1)
        t_ray2, s_ray2, _ = _curate_time(manifest, tmp / "ray2", "ray", 2)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    overhead_ms = (1 / s_ray1 - 1 / s_local) * 1000
    g = "curation (tiny, steady state)"
    return [
        row(g, "local runner, 1 process", s_local, "clips/s", f"{n} clips; end to end {n / t_local:.2f} clips/s"),
        row(
            g,
            "Ray, 1 worker",
            s_ray1,
            "clips/s",
            f"end to end {n / t_ray1:.2f} clips/s",
            baseline=s_local,
            baseline_name="local",
        ),
        row(
            g,
            "Ray, 2 workers",
            s_ray2,
            "clips/s",
            f"end to end {n / t_ray2:.2f} clips/s",
            baseline=s_ray1,
            baseline_name="Ray 1 worker",
            goal=">= 1.7x of 1 worker",
        ),
        row(
            g,
            "Ray overhead per clip (1 worker vs local)",
            overhead_ms,
            "ms/clip",
            "1/rate(Ray 1 worker) - 1/rate(local)",
            goal="< 20 ms",
        ),
    ]


def duckdb_rows(quick: bool) -> list[dict]:
    import duckdb

    from alchemist_data import schema

    n = 200_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    words = np.array(["man", "woman", "dog", "horse", "blue cap", "red car", "bottle", "coat", "cat", "jacket"])
    cols = {
        "clip_id": pa.array([f"clip-{i // 6:07d}" for i in range(n)]),
        "entity_word": pa.array(words[rng.integers(0, len(words), n)]),
        "category": pa.array(np.where(rng.random(n) < 0.4, "subject", "object")),
        "frame_index": pa.array(rng.integers(0, 3, n).astype(np.int8)),
        "frame_time_s": pa.array(rng.random(n) * 10),
        "is_detected": pa.array(rng.random(n) < 0.8),
        "box_score": pa.array(rng.random(n).astype(np.float32)),
        "mask_iou_score": pa.array(rng.random(n).astype(np.float32)),
        "mask_area_frac": pa.array(rng.random(n).astype(np.float32)),
        "has_face": pa.array(rng.random(n) < 0.2),
    }
    table = schema.conform(pa.table(cols), "entities")
    tmp = Path(tempfile.mkdtemp(prefix="alchemist-duck-"))
    try:
        for i, start in enumerate(range(0, n, n // 8)):
            pq.write_table(table.slice(start, n // 8), tmp / f"part-{i:05d}.parquet")
        con = duckdb.connect()
        sql = (
            f"SELECT category, entity_word, count(*) AS n, avg(mask_area_frac) AS area, "
            f"quantile_cont(box_score, 0.9) AS p90 FROM read_parquet('{tmp}/*.parquet') "
            "WHERE is_detected AND mask_iou_score > 0.5 AND frame_index = 1 GROUP BY ALL ORDER BY n DESC"
        )
        con.sql(sql).fetchall()  # warm the file metadata cache, as an interactive user would have
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            con.sql(sql).fetchall()
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metric, median_ms = f"filter + aggregate over {n:,} entity rows (median of 5)", float(np.median(times)) * 1000
    return [row("duckdb", metric, median_ms, "ms", "8 Parquet shards, contract schema", goal="< 1000 ms")]


def run(quick: bool) -> list[dict]:
    return duckdb_rows(quick) + curation_rows(quick)


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)
