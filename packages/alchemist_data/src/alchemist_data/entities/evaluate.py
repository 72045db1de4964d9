"""Score an entity-word extractor against labelled captions: per-category precision/recall and reject accuracy.

A labelled set is JSONL, one caption a line: ``caption``, ``subject``/``object``/``background`` (lists of
words a reader would pick), ``reject_reason`` (null = the clip is kept) and optional ``tags`` (the error class
a case probes), ``style`` and ``split``. ``tests/data/entity_captions.jsonl`` is the project's set: its ``dev``
captions were looked at while the offline backend was fixed, its ``holdout`` captions only scored.

Words are matched one-to-one within a category, exact matches first, then by head word (the last word of the
phrase, or the word before ``of``: "group of people" -> group), case-insensitive. Head matching forgives the
adjectives a reader and an extractor disagree on ("small green-capped bottle" vs "green-capped bottle"), yet
counts a referent listed twice ("bearded man" + "man") as one false positive. Exact matches are scored too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alchemist_data.entities.result import CATEGORIES, REJECT_REASONS

KEPT = "kept"  # the reject-reason label of a clip that is not rejected


class _Result(Protocol):
    """What scoring reads from a result: :class:`EntityResult`, or the same fields from another revision."""

    subject: list[str]
    object: list[str]
    background: list[str]
    reject_reason: str | None


@dataclass(frozen=True)
class LabelledCaption:
    caption: str
    subject: tuple[str, ...]
    object: tuple[str, ...]
    background: tuple[str, ...]
    reject_reason: str | None
    tags: tuple[str, ...] = ()
    style: str = ""
    split: str = ""


def load_labelled(path: str | Path) -> list[LabelledCaption]:
    """Read a labelled JSONL set; a malformed line is a ``ValueError`` naming the file and line."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            case = LabelledCaption(
                caption=d["caption"],
                subject=tuple(d.get("subject", ())),
                object=tuple(d.get("object", ())),
                background=tuple(d.get("background", ())),
                reject_reason=d.get("reject_reason"),
                tags=tuple(d.get("tags", ())),
                style=d.get("style", ""),
                split=d.get("split", ""),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a labelled caption ({e}); need caption, subject, object, ...") from e
        if case.reject_reason is not None and case.reject_reason not in REJECT_REASONS:
            raise ValueError(f"{path}:{n}: unknown reject_reason {case.reject_reason!r}; one of {REJECT_REASONS}")
        for cat in CATEGORIES:
            for w in getattr(case, cat):
                if w not in case.caption:
                    raise ValueError(f"{path}:{n}: {cat} word {w!r} is not a substring of the caption")
        out.append(case)
    return out


_WORD = re.compile(r"[\w'-]+")


def head_word(phrase: str) -> str:
    """'group of people' -> 'group'; 'cloudy, forested area' -> 'area'; "chef's hat" -> 'hat'."""
    words = _WORD.findall(phrase.lower())
    if "of" in words[1:]:
        words = words[: words.index("of", 1)]
    return words[-1].removesuffix("'s") if words else ""


def _match(predicted: Sequence[str], expected: Sequence[str]) -> tuple[int, int]:
    """(exact matches, exact-or-head matches), each word used at most once."""
    pred, exp = list(predicted), list(expected)
    exact = 0
    for w in list(pred):
        hit = next((e for e in exp if e.lower() == w.lower()), None)
        if hit is not None:
            pred.remove(w)
            exp.remove(hit)
            exact += 1
    head = exact
    for w in pred:
        hit = next((e for e in exp if head_word(e) == head_word(w)), None)
        if hit is not None:
            exp.remove(hit)
            head += 1
    return exact, head


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Scores:
    """Per-category word counts (head and exact matching) and reject-reason agreement."""

    n: int = 0
    words: dict[str, Counts] = field(default_factory=lambda: {c: Counts() for c in CATEGORIES})
    exact: dict[str, Counts] = field(default_factory=lambda: {c: Counts() for c in CATEGORIES})
    reasons: dict[str, Counts] = field(default_factory=dict)  # per reject reason (and KEPT)
    reject_correct: int = 0
    by_tag: dict[str, list[int]] = field(default_factory=dict)  # tag -> [correct reject reason, cases]
    errors: list[dict[str, Any]] = field(default_factory=list)  # the cases that differ, for reading

    @property
    def reject_accuracy(self) -> float:
        return self.reject_correct / self.n if self.n else 1.0

    def summary(self) -> dict[str, float]:
        """Flat numbers: ``<category>_precision``/``_recall`` (head), ``..._exact_...``, ``reject_accuracy``."""
        out: dict[str, float] = {}
        for c in CATEGORIES:
            out[f"{c}_precision"] = self.words[c].precision
            out[f"{c}_recall"] = self.words[c].recall
            out[f"{c}_exact_precision"] = self.exact[c].precision
            out[f"{c}_exact_recall"] = self.exact[c].recall
        out["reject_accuracy"] = self.reject_accuracy
        for reason, k in self.reasons.items():
            out[f"{reason}_precision"] = k.precision
            out[f"{reason}_recall"] = k.recall
        for tag, (ok, n) in self.by_tag.items():
            out[f"tag_{tag}_reject_accuracy"] = ok / n
        return out


def score(results: Sequence[_Result], labelled: Sequence[LabelledCaption]) -> Scores:
    """Score extractor results (one per labelled caption, same order)."""
    if len(results) != len(labelled):
        raise ValueError(f"{len(results)} results for {len(labelled)} labelled captions")
    s = Scores(n=len(labelled))
    for r, case in zip(results, labelled, strict=True):
        differs = False
        for c in CATEGORIES:
            pred, exp = list(getattr(r, c)), list(getattr(case, c))
            exact, head = _match(pred, exp)
            for counts, tp in ((s.words[c], head), (s.exact[c], exact)):
                counts.tp += tp
                counts.fp += len(pred) - tp
                counts.fn += len(exp) - tp
            differs |= head != len(pred) or head != len(exp)
        got, want = r.reject_reason or KEPT, case.reject_reason or KEPT
        ok = got == want
        s.reject_correct += ok
        for reason in {got, want}:
            k = s.reasons.setdefault(reason, Counts())
            if ok:
                k.tp += 1
            elif reason == got:
                k.fp += 1
            else:
                k.fn += 1
        for tag in case.tags or ("untagged",):
            s.by_tag.setdefault(tag, [0, 0])
            s.by_tag[tag][0] += ok
            s.by_tag[tag][1] += 1
        if differs or not ok:
            s.errors.append(
                {
                    "caption": case.caption,
                    "got": {c: list(getattr(r, c)) for c in CATEGORIES} | {"reject_reason": r.reject_reason},
                    "want": {c: list(getattr(case, c)) for c in CATEGORIES} | {"reject_reason": case.reject_reason},
                }
            )
    return s


def evaluate(extractor: Any, labelled: Sequence[LabelledCaption]) -> Scores:
    """Run ``extractor.extract_batch`` over the labelled captions and score it."""
    return score(extractor.extract_batch([c.caption for c in labelled]), labelled)


def format_table(columns: dict[str, Scores], tags: Iterable[str] = ()) -> str:
    """A markdown table: one row per number, one column per scored run (e.g. before / after)."""
    names = list(columns)
    rows = [f"| metric | {' | '.join(names)} |", "|---|" + "---|" * len(names)]

    def line(label: str, values: list[str]) -> None:
        rows.append(f"| {label} | {' | '.join(values)} |")

    for c in CATEGORIES:
        for kind in ("precision", "recall"):
            line(f"{c} {kind}", [f"{getattr(s.words[c], kind):.3f}" for s in columns.values()])
    for c in CATEGORIES:
        for kind in ("precision", "recall"):
            line(f"{c} {kind} (exact words)", [f"{getattr(s.exact[c], kind):.3f}" for s in columns.values()])
    line("reject-reason accuracy", [f"{s.reject_accuracy:.3f} ({s.reject_correct}/{s.n})" for s in columns.values()])
    reasons = sorted({r for s in columns.values() for r in s.reasons}, key=lambda r: (r != KEPT, r))
    for reason in reasons:
        vals = []
        for s in columns.values():
            k = s.reasons.get(reason, Counts())
            vals.append(f"P {k.precision:.2f} / R {k.recall:.2f}")
        line(f"reason `{reason}`", vals)
    for tag in tags:
        vals = []
        for s in columns.values():
            ok, n = s.by_tag.get(tag, [0, 0])
            vals.append(f"{ok}/{n}")
        line(f"tag `{tag}`: right reject reason", vals)
    return "\n".join(rows)
