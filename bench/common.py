"""What the area benchmarks share: the row every one reports to bench/run.py, interleaved timing, and this
interpreter run as a child process."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def row(
    group: str,
    metric: str,
    value: Any,
    unit: str,
    note: str = "",
    *,
    baseline: Any = None,
    baseline_name: str | None = None,
    goal: str | None = None,
) -> dict:
    """One row of the bench table; a ``baseline`` is always measured in the same run as ``value``."""
    return {
        "group": group,
        "metric": metric,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "goal": goal,
        "note": note,
    }


def fmt(value: Any, digits: int = 4, missing: str = "") -> str:
    """A value for a table: floats to ``digits`` significant digits, None as ``missing``."""
    if value is None:
        return missing
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU s, wall s) per function over ``repeats`` rounds, each round running every function once, so a
    change in the machine's load hits all of them alike."""
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            samples[name].append((time.process_time() - c0, time.perf_counter() - w0))
    return {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) for k, v in samples.items()}


def print_rows(rows: list[dict], metric_width: int, baseline_width: int = 0) -> None:
    """The rows as a plain-text table, for running an area module on its own."""
    for r in rows:
        baseline = format(str(r["baseline"]), f">{baseline_width}") if baseline_width else r["baseline"]
        print(f"{r['metric']:<{metric_width}} {r['value']:>8} {r['unit']}  vs {baseline}   {r['note']}")


def run_python(args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """This interpreter with ``args`` (``-m module ...``, ``-c code ...``), its output captured as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
