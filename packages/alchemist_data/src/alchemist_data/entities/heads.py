"""The head noun of an entity word, and what WordNet and spaCy's NER say about it (person/animal, scene, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alchemist_data.entities.lexicon import Lexicon
from alchemist_data.entities.tables import (
    ANIMATE_COLLECTIVES,
    BODY_PART_WORDS,
    COLLECTIVE_WORDS,
    CONTAINER_COLLECTIVES,
    NON_PERSON_ENTITY_LABELS,
    SCENE_WORDS,
)


def locate(word: str, caption: str) -> tuple[int, int]:
    """Character span of ``word`` in ``caption``: a whole-word match when there is one, else the first match."""
    m = re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", caption)
    if m:
        return m.start(), m.end()
    i = caption.find(word)
    return i, i + len(word)


def head_token(doc: Any, word: str, caption: str) -> Any:
    """The head token of ``word``'s first mention in the parsed caption, or None."""
    start, end = locate(word, caption)
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None or len(span) == 0:
        return None
    nouns = [t for t in span if t.pos_ in ("NOUN", "PROPN")]
    root = span.root
    if root.pos_ not in ("NOUN", "PROPN"):
        # An LLM phrase the parser attached oddly, or nouns it tagged ADJ ("an old fisherman repairs"): an
        # English noun phrase ends in its head.
        words = [t for t in span if not t.is_punct]
        root = nouns[-1] if nouns else (words[-1] if words else root)
    return root


def wn_keys(tok: Any) -> list[str]:
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
    wn_key: str | None = None  # the WordNet key that matched ('teddy_bear'), None when WordNet has none


def _entity_is_one_token(tok: Any) -> bool:
    return tok.ent_iob_ == "B" and (tok.i + 1 == len(tok.doc) or tok.doc[tok.i + 1].ent_iob_ != "I")


def _name_animacy(tok: Any, lex: Lexicon, key: str | None, animate: bool) -> bool:
    """Whether a name is a person/animal, when spaCy's NER and WordNet's first sense disagree.

    * A one-word PERSON whose first WordNet sense is a named thing is that thing: the small NER model tags
      "The Moon rises" as a person. A full name ("Michael Jordan") stays a person whatever WordNet says.
    * A proper noun with a non-person label is a brand, team, place or title, whatever its common-noun sense:
      "a red Jaguar" (ORG), "the Miami Dolphins" (GPE).
    * A plural whose every sense is a named individual is a family, team or show ("the simpsons").
    """
    senses = lex.noun_senses(key) if key else ()
    if tok.ent_type_ == "PERSON":
        named_thing = bool(senses) and senses[0][2] and not senses[0][1]
        return animate or not (named_thing and _entity_is_one_token(tok))
    if tok.pos_ == "PROPN" and tok.ent_type_ in NON_PERSON_ENTITY_LABELS:
        return False
    if tok.tag_ in ("NNS", "NNPS") and senses and all(instance for _lex, _anim, instance in senses):
        return False
    return animate


def _common_senses(lex: Lexicon, key: str, n: int) -> tuple[tuple[str, bool, bool], ...]:
    return tuple(s for s in lex.noun_senses(key) if not s[2])[:n]


def head_info(tok: Any, lex: Lexicon) -> HeadInfo:
    lemma = tok.lemma_.lower()
    lexname, animate, wn_key = None, False, None
    for key in wn_keys(tok):
        lexname, animate = lex.noun_info(key)
        if lexname is not None:
            wn_key = key
            break
    animate = _name_animacy(tok, lex, wn_key, animate)
    collective = False
    if lemma in COLLECTIVE_WORDS or tok.lower_ in COLLECTIVE_WORDS:
        comp = of_complement(tok)
        if comp is not None and (lemma in CONTAINER_COLLECTIVES or tok.lower_ in CONTAINER_COLLECTIVES):
            # "group of people" yes, "couple of cups" no. The second common sense counts too: the first sense
            # of "fans" in "a crowd of fans" is the machine. Rarer senses do not ("a row of chairs" is no
            # group of chairmen), nor do named individuals ("a set of keys" is no set of Francis Scott Keys).
            collective = head_info(comp, lex).animate or any(
                anim for key in wn_keys(comp)[-2:] for _lex, anim, _inst in _common_senses(lex, key, 2)
            )
        else:
            collective = lemma in ANIMATE_COLLECTIVES or tok.lower_ in ANIMATE_COLLECTIVES
        animate = animate or collective
    return HeadInfo(lemma, lexname, animate, collective, wn_key)


def is_body_part(h: HeadInfo) -> bool:
    return h.lemma in BODY_PART_WORDS or h.lexname == "noun.body"


def is_scene(h: HeadInfo) -> bool:
    return h.lemma in SCENE_WORDS or (h.lexname == "noun.location" and not h.animate)
