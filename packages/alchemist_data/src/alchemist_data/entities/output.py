"""Rule 1 (spec §2.2): an extractor's raw output (LLM text or a dictionary) parsed into entity-word lists."""

from __future__ import annotations

import ast
import json
from typing import Any

from alchemist_data.entities.result import CATEGORIES

_KEY_ALIASES = {
    "background": "background",
    "backgrounds": "background",
    "subject": "subject",
    "subjects": "subject",
    "object": "object",
    "objects": "object",
}
MAX_OUTPUT_CHARS = 20_000  # literal_eval on megabytes of garbage would take seconds


def _first_braced(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (braces inside quotes ignored), or None."""
    start = text.find("{")
    if start < 0:
        return None
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def parse_output(raw: dict | str) -> tuple[dict[str, list[str]] | None, str]:
    """Rule 1: ``({category: [words]}, "")`` or ``(None, why)`` when the output is not a valid dictionary."""
    if isinstance(raw, str):
        if len(raw) > MAX_OUTPUT_CHARS:
            return None, f"the output has {len(raw)} characters (more than {MAX_OUTPUT_CHARS})"
        braced = _first_braced(raw)
        if braced is None:
            return None, f"no {{...}} dictionary in the output {raw[:120]!r}"
        value: Any = None
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(braced)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if value is None:
            return None, f"the output {braced[:120]!r} does not parse as a dictionary"
    else:
        value = raw
    if not isinstance(value, dict):
        return None, f"the output is a {type(value).__name__}, not a dictionary"
    out: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    seen = False
    for key, words in value.items():
        cat = _KEY_ALIASES.get(str(key).strip().lower())
        if cat is None:
            return None, f"unexpected key {key!r} (expected background, subject, object)"
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, list | tuple) or not all(isinstance(w, str) for w in words):
            return None, f"the value of {key!r} is not a list of strings: {words!r}"
        out[cat].extend(w.strip() for w in words if w.strip())  # [''] is the paper's "none"
        seen = True
    if not seen:
        return None, "the dictionary has none of the keys background, subject, object"
    return out, ""
