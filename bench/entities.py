"""Entity words of the offline backend scored on the labelled captions (tests/data/entity_captions.jsonl).

``run`` gives ``make bench`` its rows (the current code, with the code at ``BASELINE_REV`` as the baseline when
git has that revision). Run as a script for the before/after markdown table:

    python -m bench.entities [--baseline-rev cc465d1] [--errors]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import row

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "entity_captions.jsonl"
LLM_OUTPUTS = ROOT / "tests" / "data" / "entity_llm_outputs.jsonl"
BASELINE_REV = "cc465d1"  # the last revision before issue 11 §3 (entities.py still one module)
_OLD_PATH = "packages/alchemist_data/src/alchemist_data/entities.py"
TAGS = ("ordinary", "plural", "no_subject", "background_phrase", "text_title", "named_entity", "coreference")


def baseline_module(rev: str = BASELINE_REV) -> Any:
    """The one-module entities.py at git revision ``rev``, imported under another name."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:{_OLD_PATH}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError(f"cannot read {_OLD_PATH} at git revision {rev!r}: {e}") from e
    folder = Path(tempfile.mkdtemp(prefix="alchemist-entities-baseline-"))
    path = folder / f"entities_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"entities_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def baseline_extractor(rev: str = BASELINE_REV) -> Any:
    """The offline extractor of entities.py at git revision ``rev``."""
    from alchemist_data.profiles import EntitiesConfig

    return baseline_module(rev).build_extractor(EntitiesConfig(backend="spacy"))


def current_extractor() -> Any:
    from alchemist_data.entities import build_extractor
    from alchemist_data.profiles import EntitiesConfig

    return build_extractor(EntitiesConfig(backend="spacy"))


def _captions_per_s(extractors: list[Any], captions: list[str], repeats: int) -> list[float]:
    """Warm throughput of each extractor (after a first pass loads models and caches), best of ``repeats``.

    The extractors take turns, so a burst of load from another process on a shared machine hits all of them.
    """
    for ex in extractors:
        ex.extract_batch(captions)
    best = [float("inf")] * len(extractors)
    for _ in range(repeats):
        for i, ex in enumerate(extractors):
            t0 = time.perf_counter()
            ex.extract_batch(captions)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [len(captions) / b for b in best]


def run(quick: bool) -> list[dict]:
    from alchemist_data.entities.evaluate import evaluate, load_labelled

    labelled = load_labelled(LABELLED)
    captions = [c.caption for c in labelled]
    new = current_extractor()
    try:
        old = baseline_extractor()
    except ValueError:  # no git history (an sdist, a shallow clone): numbers without a baseline
        old = None
    after = evaluate(new, labelled).summary()
    before = evaluate(old, labelled).summary() if old is not None else None
    speeds = _captions_per_s([new] + ([old] if old is not None else []), captions, 2 if quick else 5)
    group = f"entity words (offline, {len(labelled)} captions)"
    rows = [
        row(
            group,
            "throughput, warm, 1 thread",
            round(speeds[0], 1),
            "captions/s",
            "spaCy parse + WordNet + rules, one process; the two take turns",
            baseline=round(speeds[1], 1) if old is not None else None,
            baseline_name=BASELINE_REV,
            goal="no slower than the baseline",
        )
    ]
    for metric in (
        "subject_precision",
        "subject_recall",
        "object_precision",
        "object_recall",
        "background_precision",
        "background_recall",
        "reject_accuracy",
    ):
        rows.append(
            row(
                group,
                metric,
                round(after[metric], 4),
                "",
                "tests/data/entity_captions.jsonl, head-word matching",
                baseline=None if before is None else round(before[metric], 4),
                baseline_name=BASELINE_REV,
                goal="higher",
            )
        )
    return rows


def main() -> None:
    from alchemist_data.entities.evaluate import evaluate, format_table, load_labelled

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--errors", action="store_true", help="also print every caption the current code gets wrong")
    args = ap.parse_args()
    labelled = load_labelled(LABELLED)
    old, new = baseline_extractor(args.baseline_rev), current_extractor()
    splits = {"all": labelled}
    for case in labelled:
        splits.setdefault(case.split or "unsplit", []).append(case)
    for name, cases in splits.items():
        before, after = evaluate(old, cases), evaluate(new, cases)
        print(f"\n## {name}: {len(cases)} labelled captions ({LABELLED.relative_to(ROOT)})\n")
        print(format_table({f"before ({args.baseline_rev})": before, "after": after}, TAGS))
        if args.errors and name != "all":
            for e in after.errors:
                print(f"\n{e['caption']}\n  got  {e['got']}\n  want {e['want']}")
    _print_llm_table(args.baseline_rev, labelled)


def _print_llm_table(rev: str, labelled: list[Any]) -> None:
    """The recorded LLM answers through the rules of ``rev`` and of the current code."""
    from alchemist_data.entities import apply_rules
    from alchemist_data.entities.evaluate import format_table, score

    by_caption = {c.caption: c for c in labelled}
    rows = [json.loads(line) for line in LLM_OUTPUTS.read_text().splitlines() if line.strip()]
    cases = [by_caption[r["caption"]] for r in rows]
    old_rules = baseline_module(rev).apply_rules
    before = score([old_rules(r["output"], r["caption"]) for r in rows], cases)
    after = score([apply_rules(r["output"], r["caption"]) for r in rows], cases)
    print(f"\n## LLM backend: {len(rows)} recorded answers to the paper's prompt ({LLM_OUTPUTS.relative_to(ROOT)})\n")
    print(format_table({f"rules at {rev}": before, "rules now": after}, TAGS))


if __name__ == "__main__":
    main()
