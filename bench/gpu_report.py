"""The markdown report of `make gpu-check` (bench/gpu_check.py): one table per section that ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.common import fmt

SECTIONS = ("curation", "eval", "train", "tests")
REAL, RANDOM = "real checkpoint", "released layout, RANDOM weights"


def _f(v: Any, digits: int = 4) -> str:
    return fmt(v, digits, missing="n/a")


def write_report(results: dict, path: str | os.PathLike) -> str:
    """Write the markdown report of a ``results`` dict (``meta``, ``checkpoints`` and one entry per section that
    ran; a failed section is ``{"error": text}``) to ``path`` and return it."""
    meta = results.get("meta", {})
    md = [
        f"# GPU check ({meta.get('when', '?')})",
        "",
        f"{meta.get('gpu', '?')}; torch {meta.get('torch', '?')}, CUDA {meta.get('cuda', '?')}; "
        f"{meta.get('machine', '?')}; total {_f(meta.get('total_s'), 3)} s"
        + ("; **smoke run (tiny models), not GPU numbers**" if meta.get("smoke") else ""),
        "",
    ]
    ckpts = results.get("checkpoints")
    if ckpts:
        md += ["## Checkpoints", "", "| model | source | path |", "|---|---|---|"]
        md += [f"| {c['what']} | {c['source']} | `{c['path']}` |" for c in ckpts.values()]
        if any(c["source"] != REAL for c in ckpts.values()):
            md += [
                "",
                "Random weights give meaningless boxes, masks and scores: the numbers below are speed and "
                "memory, not quality.",
            ]
        md.append("")
    for section in SECTIONS:
        if section not in results:
            continue
        res = results[section]
        md += [f"## {section}", ""]
        if "error" in res:
            md += ["FAILED:", "", "```", res["error"].rstrip(), "```", ""]
            continue
        md += _SECTION_WRITERS[section](res) + [""]
    text = "\n".join(md)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


def _curation_md(res: dict) -> list[str]:
    md = [
        f"`{res['profile']}` stages over {res['num_clips']} sample clips ({res['num_curated']} curated), one stage "
        "at a time (setup excluded from clips/h)."
    ]
    md += [f"- {n}" for n in res.get("notes", [])]
    md += [
        "",
        "| stage | GPU stage | setup s | seconds | clips/h | peak GPU MiB | GPU busy % |",
        "|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['stage']} | {'yes' if r['gpu'] else 'no'} | {_f(r['setup_s'], 3)} | {_f(r['seconds'], 3)} | "
        f"{_f(r['clips_per_h'])} | {_f(r['peak_gpu_mib'])} | {_f(r['gpu_busy_pct'], 3)} |"
        for r in res["stages"]
    ]
    return md


def _eval_md(res: dict) -> list[str]:
    return [
        f"`{res['profile']}` models, {res['num_videos']} videos x {res['num_frames']} frames {res['size']}, "
        f"metrics {', '.join(res['metrics'])}.",
        "",
        "| protocol | videos/s | GPU busy % |",
        "|---|---|---|",
        f"| batched (8 videos per call) | {_f(res['batched_videos_per_s'])} | {_f(res['batched_busy_pct'], 3)} |",
        f"| official (one pass per metric, batch size 1) | {_f(res['official_videos_per_s'])} | "
        f"{_f(res['official_busy_pct'], 3)} |",
        "",
        f"Speed-up {_f(res['speedup'], 3)}x; largest score difference between the protocols "
        f"{_f(res['max_score_diff'], 3)}.",
    ]


def _train_md(res: dict) -> list[str]:
    md = [
        f"`{res['profile']}` model on {res['gpu']} (dense bf16 peak {_f(res['peak_tflops'], 4)} TFLOP/s).",
        "",
        "| run | metric | value | unit |",
        "|---|---|---|---|",
    ]
    for run in res["runs"]:
        md += [f"| {run['run']} | {r['metric']} | {_f(r['value'])} | {r['unit']} |" for r in run["rows"]]
    notes = {r["note"] for run in res["runs"] for r in run["rows"] if r.get("note")}
    md += [""] + [f"- {n}" for n in sorted(notes)]
    return md


def _tests_md(res: dict) -> list[str]:
    md = [f"`pytest -m gpu`: {res['summary']} (exit {res['exit_code']}, {_f(res['seconds'], 3)} s)"]
    if res.get("tail"):
        md += ["", "```", res["tail"].rstrip(), "```"]
    return md


_SECTION_WRITERS = {"curation": _curation_md, "eval": _eval_md, "train": _train_md, "tests": _tests_md}
