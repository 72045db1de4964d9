"""The paper's post-processing rules 2-5 (spec §2.2), shared by both backends: :func:`apply_rules`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from alchemist_data.entities.captions import check_caption
from alchemist_data.entities.heads import HeadInfo, head_info, head_token, is_body_part, is_scene, of_complement
from alchemist_data.entities.lexicon import Lexicon, get_lexicon
from alchemist_data.entities.mentions import background_reason, named_reason, same_referent, text_reason
from alchemist_data.entities.output import parse_output
from alchemist_data.entities.result import CATEGORIES, EntityResult, reject
from alchemist_data.entities.tables import (
    COLLECTIVE_WORDS,
    PLURAL_QUANTIFIERS,
    PRONOUNS,
    QUANTIFIER_WORDS,
    RECLASSIFY_RULES,
)

_LEADING_WORD = re.compile(r"^\s*([A-Za-z]+)\s+")


def _strip_quantifiers(word: str) -> tuple[str, list[str]]:
    """'two small dogs' -> ('small dogs', ['two']); the result is a suffix, hence still a substring."""
    removed = []
    while True:
        m = _LEADING_WORD.match(word)
        if not m or m.group(1).lower() not in QUANTIFIER_WORDS:
            return word, removed
        removed.append(m.group(1))
        word = word[m.end() :]


def _rule_matches(rule: str, h: HeadInfo) -> bool:
    if rule == "body_part":
        return is_body_part(h)
    if rule == "scene":
        return is_scene(h) and not is_body_part(h)
    if rule == "animate_object":
        return h.animate and not is_body_part(h) and not is_scene(h)
    if rule == "inanimate_subject":
        return not h.animate
    raise AssertionError(rule)


def _plural_reason(tok: Any, h: HeadInfo) -> str | None:
    """Why the subject headed by ``tok`` is plural, naming the word; None when singular."""
    if h.collective:
        comp = of_complement(tok)
        return f"collective {tok.text!r}" + (f" (of {comp.text!r})" if comp is not None else "")
    for child in tok.children:
        low = child.lower_
        if child.dep_ in ("nummod", "det", "amod", "quantmod", "predet") and (
            low in PLURAL_QUANTIFIERS or (child.tag_ == "CD" and low not in ("one", "1"))
        ):
            return f"{tok.text!r} with quantifier {child.text!r}"
    if tok.tag_ in ("NNS", "NNPS"):
        return f"{tok.text!r} is plural (tag {tok.tag_})"
    # "a group of dogs": the subject word is 'dogs' (already NNS); "a herd of cattle": 'cattle' is NN.
    if tok.dep_ == "pobj" and tok.head.lower_ == "of" and tok.head.head.lemma_.lower() in COLLECTIVE_WORDS:
        return f"{tok.text!r} in {tok.head.head.text + ' of'!r}"
    return None


def _mention_drop(tok: Any, info: HeadInfo | None) -> str | None:
    """The drop reason of a word that is on-screen text, a name of nothing visible, or a background detail."""
    if text_reason(tok):
        return "text"
    if named_reason(tok):
        return "named"
    if background_reason(tok, info):
        return "background_detail"
    return None


def _merge_repeated_mentions(
    entries: list[tuple[str, str, Any, HeadInfo | None]], caption: str, dropped: list[tuple[str, str]]
) -> list[tuple[str, str, Any, HeadInfo | None]]:
    """One referent named twice ("bearded man", then "the man") is one entity: keep the more specific word."""
    kept = []
    for word, cat, tok, info in entries:
        longer = [
            w
            for w, _c, t, _i in entries
            if t is not None and tok is not None and t.lemma_.lower() == tok.lemma_.lower() and len(w) > len(word)
        ]
        if any(same_referent(word, w, caption) for w in longer):
            dropped.append((word, "same_referent"))
            continue
        kept.append((word, cat, tok, info))
    return kept


def apply_rules(
    raw: dict | str,
    caption: str,
    *,
    max_caption_chars: int = 2000,
    lexicon: Lexicon | None = None,
    doc: Any = None,
    dropped: Sequence[tuple[str, str]] = (),
) -> EntityResult:
    """The paper's post-processing (spec §2.2), in order, on an LLM output string or an already-parsed dict.

    ``doc`` is the caption's spaCy doc when the caller already has it; ``dropped`` carries word drops the
    extractor made before (they are kept in the result).
    """
    lex = lexicon or get_lexicon()
    bad = check_caption(caption, max_caption_chars, lex)
    if bad is not None:
        return bad
    dropped = list(dropped)

    parsed, why = parse_output(raw)  # rule 1
    if parsed is None:
        return reject("invalid_output", why, dropped=dropped)

    for cat in CATEGORIES:  # rule 2
        for word in parsed[cat]:
            if word not in caption:
                return reject(
                    "not_substring", f"{cat} word {word!r} is not an exact substring of the caption", dropped=dropped
                )

    if doc is None:
        doc = lex.nlp(caption)

    # Word clean-up (hard rule "a noun without any quantifier"; mentions that are no entity of their own), then
    # rule 3 on each word's head noun.
    seen: set[str] = set()
    entries: list[tuple[str, str, Any, HeadInfo | None]] = []
    for cat in ("subject", "object", "background"):  # subject first: a word listed twice stays a subject
        for word in parsed[cat]:
            word, removed = _strip_quantifiers(word)
            dropped += [(q, "quantifier") for q in removed]
            if not word.strip():
                continue
            if word.lower() in PRONOUNS:
                dropped.append((word, "pronoun"))
                continue
            if word in seen:
                dropped.append((word, "duplicate"))
                continue
            seen.add(word)
            tok = head_token(doc, word, caption)
            info = head_info(tok, lex) if tok is not None else None
            if tok is not None:
                drop = _mention_drop(tok, info)
                if drop is not None:
                    dropped.append((word, drop))
                    continue
            entries.append((word, cat, tok, info))
    entries = _merge_repeated_mentions(entries, caption, dropped)

    result = EntityResult(dropped=dropped)
    for word, cat, _tok, info in entries:
        new = cat
        if info is not None:
            for rule, applies_to, target, _desc in RECLASSIFY_RULES:
                if cat in applies_to and _rule_matches(rule, info):
                    new = target
                    break
        if new != cat:
            result.reclassified.append((word, cat, new))
        getattr(result, new).append(word)

    if not result.subject:  # rule 4
        result.reject_reason = "no_subject"
        result.reject_detail = "no human or animal subject word in the caption"
        return result

    by_word = {w: (tok, info) for w, _c, tok, info in entries}
    for word in result.subject:  # rule 5
        tok, info = by_word[word]
        why = _plural_reason(tok, info) if tok is not None and info is not None else None
        if why:
            result.reject_reason = "plural_subject"
            result.reject_detail = f"subject {word!r} is plural: {why}"
            return result
    return result
