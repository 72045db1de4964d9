"""Mentions in a caption that are no entity of their own, found from the parse (both backends use these).

* on-screen text and titles: a quoted span, a WORK_OF_ART name, a name right after a title noun or a text verb
  ("the movie Little Women", "a book titled The Three Musketeers", "the logo 'Chicago Bulls'");
* names of nothing visible: a plural proper name with a non-person label (a team: "the Miami Dolphins"), an
  EVENT, LAW or LANGUAGE;
* background details: what a background noun is "of" ("a blurred background of people") or what is "in the
  background" / "in the distance" ("children playing in the background");
* a second mention of one referent ("a bearded man ... the man").
"""

from __future__ import annotations

import re
from typing import Any

from alchemist_data.entities.heads import HeadInfo, is_scene, locate
from alchemist_data.entities.tables import (
    BACKGROUND_GOVERNORS,
    BACKGROUND_PLACES,
    DEFINITE_DETERMINERS,
    NON_PERSON_ENTITY_LABELS,
    TEXT_VERBS,
    TEXT_WORDS,
    TITLE_NOUNS,
)

# An opening quote follows a space or the start (so the apostrophe of "chef's" opens nothing), the closing one
# is the same character followed by a non-word character or the end.
_QUOTED = re.compile(r"""(?:(?<=\s)|^)(["'\u2018\u201c])(\S(?:.*?\S)?)(?:\1|[\u2019\u201d])(?=\W|$)""")


def quoted_chars(text: str) -> list[tuple[int, int]]:
    """Character ranges of the quoted parts of ``text`` (not counting a caption that is one whole quote)."""
    spans = [(m.start(2), m.end(2)) for m in _QUOTED.finditer(text)]
    return [(a, b) for a, b in spans if b - a < len(text.strip()) - 2]


def _quoted(tok: Any) -> bool:
    doc = tok.doc
    spans = doc.user_data.get("alchemist_quoted")
    if spans is None:  # computed once per doc
        spans = doc.user_data["alchemist_quoted"] = quoted_chars(doc.text)
    return any(a <= tok.idx < b for a, b in spans)


def text_reason(tok: Any) -> str | None:
    """Why the word headed by ``tok`` is on-screen text or a title, or None."""
    if _quoted(tok):
        return "quoted text"
    if tok.ent_type_ == "WORK_OF_ART":
        return "a title (WORK_OF_ART)"
    name_like = tok.pos_ == "PROPN" or tok.tag_ in ("NNS", "NNPS")
    if not name_like or tok.lemma_.lower() in TITLE_NOUNS:
        return None
    if tok.dep_ == "appos" and tok.head.lemma_.lower() in TITLE_NOUNS | TEXT_WORDS:
        return f"the name of a {tok.head.lower_}"
    titled = [c for c in tok.lefts if c.dep_ == "compound" and c.lemma_.lower() in TITLE_NOUNS]
    if titled and any(d.lower_ in DEFINITE_DETERMINERS for d in tok.lefts if d.dep_ == "det"):
        return f"the name of a {titled[-1].lower_}"  # "the show friends", "the cartoon Ninja Turtles"
    if tok.pos_ == "PROPN" and tok.head.lower_ in TEXT_VERBS:
        return f"a name after {tok.head.text!r}"
    return None


def named_reason(tok: Any) -> str | None:
    """Why the word headed by ``tok`` names nothing visible (a team, an event), or None."""
    ent = tok.ent_type_
    if ent in ("EVENT", "LAW", "LANGUAGE"):
        return f"a name ({ent})"
    if tok.pos_ == "PROPN" and tok.tag_ == "NNPS" and ent in NON_PERSON_ENTITY_LABELS:
        return f"a plural name ({ent}), e.g. a team"
    return None


def _has_background_place(tok: Any) -> bool:
    for prep in tok.children:
        if prep.dep_ == "prep" and prep.lower_ == "in":
            if any(c.dep_ == "pobj" and c.lemma_.lower() in BACKGROUND_PLACES for c in prep.children):
                return True
    return False


def background_reason(tok: Any, info: HeadInfo | None) -> str | None:
    """Why the word headed by ``tok`` is a detail of the background, or None. Scenes stay: they are background."""
    if info is not None and is_scene(info):
        return None
    # "a blurred background of people (and shops)": climb conjuncts and 'of' phrases to the governing noun.
    t = tok
    while t.dep_ == "conj" and t.head.i != t.i:
        t = t.head
    while t.dep_ == "pobj" and t.head.lower_ == "of" and t.head.head.i != t.head.i:
        t = t.head.head
        if t.lemma_.lower() in BACKGROUND_GOVERNORS:
            return f"part of {t.text!r}"
    # "guests in the background", "children playing in the background", "people walk in the background",
    # "crowds of shoppers in the background". A main clause's subject is kept: it is what the clip is about.
    places = [tok, *(c for c in tok.children if c.dep_ in ("acl", "relcl"))]
    places += [c for p in tok.children if p.dep_ == "prep" and p.lower_ == "of" for c in p.children]
    if tok.dep_ in ("nsubj", "nsubjpass") and tok.head.dep_ != "ROOT":
        places.append(tok.head)
    if any(_has_background_place(p) for p in places):
        return "in the background"
    return None


def _is_definite_mention(caption: str, start: int) -> bool:
    before = caption[:start].split()
    return bool(before) and before[-1].lower() in DEFINITE_DETERMINERS


def same_referent(short: str, long: str, caption: str) -> bool:
    """True when every mention of ``short`` outside ``long`` refers back to it ("a bearded man ... the man").

    ``short`` must be a whole-word part of ``long``; a standalone mention with an indefinite or other
    determiner ("another man") is a second entity. Only the strings are read: the caller checks that both
    words have the same head noun ("suit" is a part of "man in a suit", yet no man).
    """
    if short == long or not re.search(r"(?<!\w)" + re.escape(short) + r"(?!\w)", long):
        return False
    longs = [(m.start(), m.end()) for m in re.finditer(r"(?<!\w)" + re.escape(long) + r"(?!\w)", caption)]
    if not longs:
        start, _ = locate(long, caption)
        longs = [(start, start + len(long))]
    for m in re.finditer(r"(?<!\w)" + re.escape(short) + r"(?!\w)", caption):
        if any(a <= m.start() and m.end() <= b for a, b in longs):
            continue
        if not _is_definite_mention(caption, m.start()):
            return False
    return True
