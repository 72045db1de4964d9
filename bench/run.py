"""`make bench`: every area's benchmark in one run; numbers to bench/results/bench.json and BENCH.md.

Each area module exposes ``run(quick: bool) -> list[dict]`` with rows
``{group, metric, value, unit, baseline, baseline_name, goal, note}``; a comparison is always measured in the
same run as its baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import fmt

AREAS = [
    "bench.data_frames",
    "bench.data_shots",
    "bench.data_curation",
    "bench.data_plane",
    "bench.data_overlap",
    "bench.entities",
    "bench.model",
    "bench.eval",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (for a smoke run)")
    ap.add_argument("--only", nargs="*", help="module names to run (default: all)")
    args = ap.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for name in args.only or AREAS:
        if not name.startswith("bench."):
            name = f"bench.{name}"
        t0 = time.time()
        print(f"== {name}", flush=True)
        try:
            module_rows = _run_isolated(name, args.quick)
        except Exception:
            failures.append({"module": name, "error": traceback.format_exc()})
            print(traceback.format_exc(), flush=True)
            continue
        for r in module_rows:
            print(f"   {r['group']:<28} {r['metric']:<44} {fmt(r['value'])} {r['unit']}", flush=True)
        rows.extend(module_rows)
        print(f"   ({time.time() - t0:.0f}s)", flush=True)
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "quick": args.quick,
    }
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows, "failures": failures}, indent=2))
    md = [
        f"# Bench results ({meta['when']}, {meta['machine']})",
        "",
        "| group | metric | value | baseline | ratio | goal | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = r.get("baseline")
        # rows whose unit is already a ratio ("x") carry it in their value
        ratio = f"{_speedup(r):.2f}x" if base and r["value"] and r["unit"] != "x" else ""
        bname = f"{fmt(base)} {r['unit']} ({r.get('baseline_name') or 'baseline'})" if base is not None else ""
        md.append(
            f"| {r['group']} | {r['metric']} | {fmt(r['value'])} {r['unit']} | {bname} | {ratio} | "
            f"{r.get('goal') or ''} | {r.get('note') or ''} |"
        )
    (out / "BENCH.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'bench.json'} and {out / 'BENCH.md'}")
    if failures:
        raise SystemExit(f"{len(failures)} bench module(s) failed: {[f['module'] for f in failures]}")


def _run_isolated(module: str, quick: bool) -> list[dict]:
    """Run one area in a fresh interpreter, so peak-memory numbers and Ray state are its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        code = (
            "import importlib, json, sys; "
            f"rows = importlib.import_module({module!r}).run(quick={quick!r}); "
            f"open({str(out)!r}, 'w').write(json.dumps(rows))"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        return json.loads(out.read_text())


def _speedup(r: dict) -> float:
    """How many times better the value is than its baseline: throughputs (unit "x/s") and scores (goal
    "higher") higher is better, everything else (times, memory) lower is better."""
    if "/s" in r["unit"] or r.get("goal") == "higher":
        return r["value"] / r["baseline"]
    return r["baseline"] / r["value"]


if __name__ == "__main__":
    main()
