"""Clip-level caption checks that need no extractor: empty, too long, not English."""

from __future__ import annotations

import re
from typing import Any

from alchemist_data.entities.lexicon import Lexicon
from alchemist_data.entities.result import EntityResult, reject
from alchemist_data.entities.tables import FOREIGN_FUNCTION_WORDS

_ASCII_WORD = re.compile(r"[A-Za-z]+")


def english_score(caption: str, lexicon: Lexicon) -> tuple[float, float]:
    """(share of letters that are ASCII, share of lower-case words that are English).

    A word is English when it is a spaCy English stop word or has a WordNet entry (NLTK's morphy handles
    inflections) and is not in :data:`FOREIGN_FUNCTION_WORDS`. Capitalised words after the first are left out
    of the second share: proper names ("Messi", "Kuala Lumpur") say nothing about the language. Cheap: a few
    dictionary lookups per word, cached.
    """
    alpha = [ch for ch in caption if ch.isalpha()]
    if not alpha:
        return 0.0, 0.0
    letters = len(alpha)
    ascii_letters = sum(1 for ch in alpha if ch.isascii())  # per letter: "café" is 3 of 4
    words = [w for i, w in enumerate(_ASCII_WORD.findall(caption)) if i == 0 or not w[0].isupper()]
    if not words:
        return ascii_letters / letters, 1.0
    known = sum(1 for w in words if w.lower() not in FOREIGN_FUNCTION_WORDS and lexicon.is_known_word(w.lower()))
    return ascii_letters / letters, known / len(words)


#: Thresholds of the non-English heuristic (see :func:`english_score`).
MIN_ASCII_LETTER_SHARE = 0.85
MIN_ENGLISH_WORD_SHARE = 0.5


def check_caption(caption: Any, max_caption_chars: int, lexicon: Lexicon | None = None) -> EntityResult | None:
    """Clip-level caption checks (no LLM needed); a reject :class:`EntityResult`, or None when usable.

    Without a lexicon only the empty and length checks run.
    """
    if caption is None or not isinstance(caption, str) or not caption.strip():
        return reject("empty_caption", "the caption is empty or whitespace only")
    if len(caption) > max_caption_chars:
        return reject(
            "caption_too_long",
            f"the caption has {len(caption)} characters, more than entities.max_caption_chars={max_caption_chars}",
        )
    if lexicon is not None:
        if not any(ch.isalpha() for ch in caption):
            return reject("non_english", "the caption has no words (no letters at all)")
        ascii_share, english_share = english_score(caption, lexicon)
        if ascii_share < MIN_ASCII_LETTER_SHARE:
            return reject(
                "non_english",
                f"only {ascii_share:.0%} of the caption's letters are ASCII (need {MIN_ASCII_LETTER_SHARE:.0%})",
            )
        n_words = len(_ASCII_WORD.findall(caption))
        if n_words >= 2 and english_share < MIN_ENGLISH_WORD_SHARE:
            return reject(
                "non_english",
                f"only {english_share:.0%} of the caption's words are English (need {MIN_ENGLISH_WORD_SHARE:.0%})",
            )
    return None
