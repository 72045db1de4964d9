"""The paper's post-processing rules 2-5 (spec §2.2), shared by both backends: :func:`apply_rules`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alchemist_data.entities.captions import check_caption
from alchemist_data.entities.lexicon import Lexicon, get_lexicon
from alchemist_data.entities.output import parse_output
from alchemist_data.entities.result import CATEGORIES, EntityResult, reject
from alchemist_data.entities.tables import (
    ANIMATE_COLLECTIVES,
    BODY_PART_WORDS,
    COLLECTIVE_WORDS,
    CONTAINER_COLLECTIVES,
    PLURAL_QUANTIFIERS,
    PRONOUNS,
    QUANTIFIER_WORDS,
    RECLASSIFY_RULES,
    SCENE_WORDS,
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


def _locate(word: str, caption: str) -> tuple[int, int]:
    """Character span of ``word`` in ``caption``: a whole-word match when there is one, else the first match."""
    m = re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", caption)
    if m:
        return m.start(), m.end()
    i = caption.find(word)
    return i, i + len(word)


def _head(doc: Any, word: str, caption: str) -> Any:
    start, end = _locate(word, caption)
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None or len(span) == 0:
        return None
    nouns = [t for t in span if t.pos_ in ("NOUN", "PROPN")]
    root = span.root
    if root.pos_ not in ("NOUN", "PROPN") and nouns:
        root = nouns[-1]  # e.g. an LLM phrase the parser attached oddly: take the last noun
    return root


def _wn_keys(tok: Any) -> list[str]:
    """WordNet keys for a head token, longest first: 'teddy bear' -> ['teddy_bear', 'bear']."""
    keys = []
    compounds = [c for c in tok.lefts if c.dep_ == "compound"]
    if compounds:
        first = min(c.i for c in compounds)
        keys.append("_".join([t.lower_ for t in tok.doc[first : tok.i]] + [tok.lemma_.lower()]))
    keys += [tok.lemma_.lower(), tok.lower_]
    return list(dict.fromkeys(k for k in keys if k))


def of_complement(tok: Any) -> Any:
    """'group of people' -> the 'people' token; None when the head has no 'of' complement."""
    for child in tok.rights:
        if child.dep_ == "prep" and child.lower_ == "of":
            for pobj in child.children:
                if pobj.dep_ == "pobj":
                    return pobj
    return None


@dataclass
class HeadInfo:
    lemma: str
    lexname: str | None
    animate: bool  # person / animal / animate collective / PERSON named entity
    collective: bool


def head_info(tok: Any, lex: Lexicon) -> HeadInfo:
    lemma = tok.lemma_.lower()
    lexname, animate = None, False
    for key in _wn_keys(tok):
        lexname, animate = lex.noun_info(key)
        if lexname is not None:
            break
    if tok.ent_type_ == "PERSON":
        animate = True
    collective = False
    if lemma in COLLECTIVE_WORDS or tok.lower_ in COLLECTIVE_WORDS:
        comp = of_complement(tok)
        if comp is not None and (lemma in CONTAINER_COLLECTIVES or tok.lower_ in CONTAINER_COLLECTIVES):
            collective = head_info(comp, lex).animate  # "group of people" yes, "couple of cups" no
        else:
            collective = lemma in ANIMATE_COLLECTIVES or tok.lower_ in ANIMATE_COLLECTIVES
        animate = animate or collective
    return HeadInfo(lemma, lexname, animate, collective)


def is_body_part(h: HeadInfo) -> bool:
    return h.lemma in BODY_PART_WORDS or h.lexname == "noun.body"


def _is_scene(h: HeadInfo) -> bool:
    return h.lemma in SCENE_WORDS or (h.lexname == "noun.location" and not h.animate)


def _rule_matches(rule: str, h: HeadInfo) -> bool:
    if rule == "body_part":
        return is_body_part(h)
    if rule == "scene":
        return _is_scene(h) and not is_body_part(h)
    if rule == "animate_object":
        return h.animate and not is_body_part(h) and not _is_scene(h)
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

    # Word clean-up (hard rule "a noun without any quantifier"), then rule 3 on each word's head noun.
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
            tok = _head(doc, word, caption)
            entries.append((word, cat, tok, head_info(tok, lex) if tok is not None else None))

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
