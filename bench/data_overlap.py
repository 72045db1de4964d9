"""Benchmark-overlap filter: index build time per reference video, query time per clip against an index the size of
MSRVTT-Personalization (2,130 videos), index memory, and precision/recall on planted copies.

The reference videos are synthetic scenes (tests/planted.py) at MSR-VTT's usual 320x240. The 2,130-video index is
the measured index padded with random codes to that size: a clip that copies nothing meets only a few candidates in
a real index too, so the random padding costs what real unrelated videos would.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import row

BENCHMARK_VIDEOS = 2130


def _padded(index, num_videos: int, rng: np.random.Generator):
    """The index with random frames appended until it holds ``num_videos`` videos of the same mean length."""
    per_video = index.num_frames / len(index.refs)
    extra = int(per_video * (num_videos - len(index.refs)))
    codes = {
        "hash": np.concatenate(
            [index.codes["hash"], rng.integers(0, 2**63, (extra, index.codes["hash"].shape[1]), dtype=np.uint64)]
        ),
        "layout": np.concatenate([index.codes["layout"], rng.integers(0, 256, (extra, 4, 4, 3), dtype=np.uint8)]),
    }
    k = max(1, int(per_video))
    video = np.concatenate([index.video, len(index.refs) + np.arange(extra) // k])
    times = np.concatenate([index.time_s, np.tile(index.time_s[:k], extra // k + 1)[:extra]])
    refs = index.refs + [type(index.refs[0])(f"pad{i}", "") for i in range(num_videos - len(index.refs))]
    return type(index)(index.coder, index.cfg, refs, codes, video.astype(np.int32), times.astype(np.float32))


def run(quick: bool = False) -> list[dict]:
    from alchemist_data.media import reference_frames
    from alchemist_data.overlap import OverlapConfig, OverlapIndex
    from tests import planted

    n_refs = 8 if quick else 24
    seconds = 10.0
    tmp = Path(tempfile.mkdtemp(prefix="alchemist-bench-overlap-"))
    try:
        refs, rows = planted.planted_set(tmp, n_refs)
        # MSR-VTT-like references (320x240, 10 s) for the build time; the planted set (192x144, 3 s) for accuracy.
        long_dir = tmp / "long"
        for i in range(n_refs):
            planted.write_scene(long_dir / f"long{i:03d}.mp4", 500 + i, 500 + i, seconds=seconds, size=(320, 240))
        t0 = time.perf_counter()
        long_index = OverlapIndex.build(OverlapConfig(reference_dir=str(long_dir)))
        build_s = (time.perf_counter() - t0) / n_refs

        index = OverlapIndex.build(OverlapConfig(reference_dir=str(refs)))
        queries = [(r, reference_frames(r["video"], max_side_px=256)) for r in rows]
        matched = {}
        for r, (_, ts, frames) in queries:
            m = index.query(frames, ts)
            matched[r["video"]] = m.ref_id if m else None
        pr = planted.precision_recall(rows, matched)

        big = _padded(long_index, BENCHMARK_VIDEOS, np.random.default_rng(0))
        nbytes = sum(a.nbytes for a in big.codes.values()) + big.video.nbytes + big.time_s.nbytes
        times = []
        for _, (_, ts, frames) in queries[: 40 if quick else len(queries)]:
            t0 = time.perf_counter()
            big.query(frames, ts)
            times.append(time.perf_counter() - t0)
        query_ms = statistics.median(times) * 1000
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    g = "benchmark overlap (phash)"
    per_video = long_index.num_frames / n_refs
    return [
        row(
            g,
            f"index build per reference video ({seconds:.0f} s, 320x240)",
            build_s * 1000,
            "ms",
            f"{per_video:.0f} frames sampled per video; {BENCHMARK_VIDEOS} videos of this length: "
            f"{build_s * BENCHMARK_VIDEOS / 60:.1f} min once per machine (cached)",
        ),
        row(
            g,
            f"query per clip, index of {BENCHMARK_VIDEOS} videos",
            query_ms,
            "ms",
            f"{big.num_frames:,} indexed frames x 6 hash variants; 3 clip frames (already decoded); median",
        ),
        row(
            g,
            f"index memory, {BENCHMARK_VIDEOS} videos",
            nbytes / 2**20,
            "MiB",
            "hashes + colour layouts + video/time",
        ),
        row(
            g,
            "precision on planted copies",
            pr["precision"],
            "",
            f"{pr['num_copies']} copies (re-encode, 0.75 scale, 4 % crop, 0.4 s trim) of {n_refs} references "
            "vs "
            f"{pr['num_distractors']} distractors (half the same background); {pr['false_positives']} false",
        ),
        row(
            g,
            "recall on planted copies",
            pr["recall"],
            "",
            ", ".join(f"{k} {pr[f'recall_{k}']:.2f}" for k in planted.COPY_KINDS),
        ),
        embedding_candidates_row(quick),
    ]


def embedding_candidates_row(quick: bool) -> dict:
    """The dinov2/clip backends' per-frame search: one float32 product against an index widened once
    (``EmbeddingCoder.prepare``), next to widening the float16 index for every queried frame (what it did before)."""
    from alchemist_data.overlap.codes import EmbeddingCoder

    rng = np.random.default_rng(0)
    frames = (BENCHMARK_VIDEOS // 10 if quick else BENCHMARK_VIDEOS) * 150  # about 150 samples per 10-s video
    emb = rng.standard_normal((frames, 768)).astype(np.float16)  # DINOv2-B / CLIP-L width, stored as float16
    index, query = {"embedding": emb}, {"embedding": emb[:1]}
    coder = EmbeddingCoder("dinov2", "random-tiny", 0.9)  # the model is never loaded: only the search is timed
    coder.prepare(index)

    def median_ms(search) -> float:
        times = []
        for _ in range(5 if quick else 15):
            t0 = time.perf_counter()
            search()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    widened_each_time = median_ms(lambda: emb.astype(np.float32) @ query["embedding"][0].astype(np.float32))
    prepared = median_ms(lambda: coder.candidates(index, query, 0))
    return row(
        "benchmark overlap (embeddings)",
        f"candidates per clip frame, index of {frames:,} x 768",
        prepared,
        "ms",
        "one float32 product against the index widened once per worker; median",
        baseline=widened_each_time,
        baseline_name="float16 index widened for every queried frame",
    )


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
