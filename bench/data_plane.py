"""The curation data plane: local disk vs an S3 server as output, bytes the driver receives per clip, and driver RSS
for 240 vs 960 clips (issue: workers write, the driver coordinates)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import row, run_python

_DRIVER = """
import json, resource, sys, time
from alchemist_data.runner import CurateOptions, Reporter, curate
manifest, output, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
info = curate(CurateOptions(manifest=manifest, output=output, profile="tiny", runner="ray", num_workers=workers,
                            overrides={"shard_size": "16"}), reporter=Reporter(enabled=False))
info["wall_s"] = time.perf_counter() - t0
info["driver_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT" + json.dumps({k: info[k] for k in ("wall_s", "driver_max_rss_mb", "driver_bytes_per_input_row",
                                                   "counts", "clips_per_s_this_run", "slowest_stage")}))
"""


def _manifest(corpus: Path, n: int) -> Path:
    """``n`` manifest rows over the corpus's videos (distinct clip ids, videos reused: decoding is not what is
    measured here)."""
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    out = corpus / f"manifest-{n}.jsonl"
    with open(out, "w") as f:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            r["clip_id"] = f"c{i:05d}"
            f.write(json.dumps(r) + "\n")
    return out


def _drive(manifest: Path, output: str, workers: int, env: dict[str, str]) -> dict:
    proc = run_python(["-c", _DRIVER, str(manifest), output, str(workers)], timeout=1800, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"curation driver failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[len("RESULT") :])


def run(quick: bool) -> list[dict]:
    from alchemist_data.sample_data import write_sample_corpus
    from tests.s3 import s3_server

    tmp = Path(tempfile.mkdtemp(prefix="alchemist-plane-"))
    small, large = (60, 240) if quick else (240, 960)
    rows = []
    try:
        corpus = write_sample_corpus(tmp / "corpus", num_clips=24, seed=7).parent
        with s3_server() as s3:
            s3.create_bucket("runs")
            env = {**os.environ, **s3.env}
            m_small, m_large = _manifest(corpus, small), _manifest(corpus, large)
            local = _drive(m_small, str(tmp / "local"), 2, env)
            remote = _drive(m_small, "s3://runs/small", 2, env)
            big = _drive(m_large, "s3://runs/large", 2, env)
        g = "curation data plane (tiny, Ray 2 workers, end to end)"
        rows += [
            row(
                g,
                f"{small} clips, output on local disk",
                local["clips_per_s_this_run"],
                "clips/s",
                f"slowest stage: {local['slowest_stage']}",
            ),
            row(
                g,
                f"{small} clips, output on the S3 server (127.0.0.1)",
                remote["clips_per_s_this_run"],
                "clips/s",
                "workers PUT their shard parts themselves",
                baseline=local["clips_per_s_this_run"],
                baseline_name="local disk",
                goal="higher",
            ),
            row(
                g,
                "bytes the driver receives per clip",
                big["driver_bytes_per_input_row"],
                "B/clip",
                f"{large} clips; part names, counts and manifest-row accounting only",
                goal="< 2048 B",
            ),
            row(
                g,
                f"driver peak RSS, {large} clips",
                big["driver_max_rss_mb"],
                "MiB",
                f"{large / small:.0f}x the clips",
                baseline=remote["driver_max_rss_mb"],
                baseline_name=f"{small} clips",
                goal="grows < 10 %",
            ),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
