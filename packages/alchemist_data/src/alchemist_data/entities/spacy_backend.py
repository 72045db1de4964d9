"""The offline backend: spaCy noun chunks sorted by WordNet lexnames, then the shared rules."""

from __future__ import annotations

from typing import Any

from alchemist_data.entities.extractor import EntityExtractor
from alchemist_data.entities.heads import head_info, is_body_part, of_complement
from alchemist_data.entities.result import CATEGORIES, EntityResult
from alchemist_data.entities.rules import apply_rules
from alchemist_data.entities.tables import (
    ABSTRACT_LEXNAMES,
    BACKGROUND_GOVERNORS,
    BACKGROUND_PLACES,
    COLLECTIVE_WORDS,
    CONTAINER_COLLECTIVES,
    META_WORDS,
    NOT_ENTITY_WORDS,
    PLURAL_QUANTIFIERS,
    PRONOUNS,
    QUANTIFIER_WORDS,
    SCENE_WORDS,
    TEXT_WORDS,
    TITLE_NOUNS,
    VISIBLE_EVENT_WORDS,
)


class SpacyWordNetExtractor(EntityExtractor):
    """Offline backend: spaCy noun chunks sorted by WordNet lexnames, then :func:`apply_rules`.

    First sort, by the chunk head's first WordNet sense: person/animal (or a PERSON entity) -> subject;
    ``noun.location`` (or a GPE/LOC/FAC entity that is no celestial body) -> background; anything else ->
    object. Nouns with abstract lexnames (:data:`ABSTRACT_LEXNAMES`: "a walk", "the day"),
    :data:`NOT_ENTITY_WORDS`, on-screen text nouns (:data:`TEXT_WORDS`) and works (:data:`TITLE_NOUNS`) are
    dropped. Phrases are joined where one entity spans two noun chunks: a collective with its members ("a group
    of people") and a background noun with what it is of ("a blurred background of people"). The rule table of
    :func:`apply_rules` then re-classifies (e.g. "clouds" object -> background) and drops titles, background
    details and repeated mentions, so ``reclassified`` and ``dropped`` show what the rules did for both backends.
    """

    backend = "spacy"

    def _extract(self, captions: list[str]) -> list[EntityResult]:
        lex = self.lexicon
        assert lex is not None
        out = []
        for caption, doc in zip(captions, lex.nlp.pipe(captions, batch_size=max(1, self.cfg.batch_size)), strict=True):
            raw, dropped = self.sort_chunks(doc)
            out.append(
                apply_rules(
                    raw, caption, max_caption_chars=self.cfg.max_caption_chars, lexicon=lex, doc=doc, dropped=dropped
                )
            )
        return out

    def _phrases(self, doc: Any) -> list[tuple[Any, Any, list[tuple[str, str]]]]:
        """(span without leading determiners/quantifiers, head token, drops) per noun phrase."""
        candidates = []
        for chunk in doc.noun_chunks:
            root = chunk.root
            start = chunk.start
            # A possessor ("the man's dog") is an entity of its own, and is cut off the possessed noun.
            for tok in chunk:
                if tok.dep_ == "poss" and tok.pos_ in ("NOUN", "PROPN") and tok.head == root:
                    candidates.append((max(tok.left_edge.i, chunk.start), tok.i + 1, tok))
            cut = [t.i for t in chunk if t.dep_ == "case" and t.head.head == root]
            if cut:
                start = max(cut) + 1
            end = chunk.end
            if self._verb_read_as_noun(root):
                # "a yellow dress dances on a stage": the small parser made 'dances' the noun; the phrase is
                # "a yellow dress" and its head the compound before it.
                root, end = doc[root.i - 1], root.i
            candidates.append((start, end, root))
        covered = {t.i for s, e, _r in candidates for t in doc[s:e]}
        for tok in doc:
            # "A golden retriever runs": the parser hung 'retriever' on the verb as a compound, so no noun chunk
            # holds it. Rebuild the phrase from the modifiers just before it.
            if tok.i in covered or tok.pos_ not in ("NOUN", "PROPN") or tok.dep_ != "compound":
                continue
            if tok.head.pos_ not in ("VERB", "AUX") and not self._verb_read_as_noun(tok.head):
                continue  # ... also when the verb itself was read as a noun: "while a girl waves at the camera"
            start = tok.i
            while start > 0 and doc[start - 1].i not in covered and doc[start - 1].pos_ in ("DET", "ADJ", "NUM"):
                start -= 1
            candidates.append((start, tok.i + 1, tok))
        phrases = []
        for start, end, root in self._join_of_phrases(candidates):
            drops: list[tuple[str, str]] = []
            while start < root.i:
                t = doc[start]
                low = t.lower_
                if (
                    low in QUANTIFIER_WORDS
                    or t.pos_ in ("DET", "NUM", "PRON", "PUNCT", "PART", "CCONJ")
                    or (t.dep_ in ("det", "predet", "nummod", "poss", "case", "quantmod"))
                    # "then the young woman": an adverb of the clause, not of the phrase ("a brightly lit stage")
                    or (t.pos_ == "ADV" and not start <= t.head.i < end)
                ):
                    if low in PLURAL_QUANTIFIERS or t.pos_ == "NUM":
                        drops.append((t.text, "quantifier"))
                    start += 1
                else:
                    break
            phrases.append((doc[start:end], root, drops))
        return phrases

    def _join_of_phrases(self, candidates: list[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
        """Extend a phrase over its "of" complement where both are one entity, dropping the complement's chunk.

        "a group of people" (a collective with animate members: one plural subject word) and "a blurred
        background of people" (a background noun: the people are part of the background, not subjects).
        """
        lex = self.lexicon
        assert lex is not None
        joined = []
        for start, end, root in sorted(candidates, key=lambda c: c[0]):
            lemma = root.lemma_.lower()
            if lemma in BACKGROUND_GOVERNORS:
                of = next((c for c in root.rights if c.dep_ == "prep" and c.lower_ == "of"), None)
                if of is not None:
                    end = max(end, of.right_edge.i + 1)
            elif lemma in COLLECTIVE_WORDS and of_complement(root) is not None and head_info(root, lex).collective:
                end = max(end, of_complement(root).i + 1)
            joined.append((start, end, root))
        extended = [(s, e, r.i) for s, e, r in joined if e > r.i + 1]
        return [(s, e, r) for s, e, r in joined if not any(a <= r.i < b and r.i != i for a, b, i in extended)]

    def _nounlike(self, tok: Any) -> bool:
        """A noun, or a word the parser tagged ADJ that is only ever a noun ("An old fisherman repairs ...")."""
        if tok.pos_ in ("NOUN", "PROPN"):
            return True
        lex = self.lexicon
        assert lex is not None
        word = tok.lower_
        return tok.pos_ == "ADJ" and lex.noun_info(word)[0] is not None and not lex.has_adjective_sense(word)

    def _verb_read_as_noun(self, root: Any) -> bool:
        """True for a plural-looking chunk head that is really the verb: "a girl waves at the camera".

        The cue is a sentence without any verb, or a singular article on a plural head ("a girl waves", "an old
        fisherman repairs"): the article belongs to the noun before, so the plural-looking word is the verb.
        """
        if root.tag_ != "NNS" or root.i == 0:
            return False
        prev = root.doc[root.i - 1]
        if prev.dep_ not in ("compound", "amod") or prev.head != root or not self._nounlike(prev):
            return False
        article = next((t.lower_ for t in root.lefts if t.dep_ == "det"), None)
        if root.sent.root.pos_ in ("VERB", "AUX") and article not in ("a", "an"):
            return False
        assert self.lexicon is not None
        return self.lexicon.has_verb_sense(root.lower_)

    def _celestial(self, wn_key: str | None) -> bool:
        assert self.lexicon is not None
        return wn_key is not None and "celestial_body.n.01" in self.lexicon.first_sense_hypernyms(wn_key)

    def sort_chunks(self, doc: Any) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
        """The raw WordNet sort of one parsed caption: ({category: [words]}, dropped)."""
        lex = self.lexicon
        assert lex is not None
        raw: dict[str, list[str]] = {c: [] for c in CATEGORIES}
        dropped: list[tuple[str, str]] = []
        text = doc.text
        for span, root, drops in self._phrases(doc):
            dropped += drops
            # Entity words are cut from the caption itself, so they are exact substrings (rule 2).
            word = text[span.start_char : span.end_char].strip(" ,;:.!?\"'()[]")
            if not word:
                continue
            if root.pos_ == "PRON" or root.lower_ in PRONOUNS:
                dropped.append((word, "pronoun"))
                continue
            if not self._nounlike(root):
                dropped.append((word, "not_noun"))
                continue
            info = head_info(root, lex)
            if root.lower_ in TEXT_WORDS or any(t.lemma_.lower() in TEXT_WORDS for t in span if t.dep_ == "compound"):
                dropped.append((word, "text"))  # "the words ... appear", "a title card"
                continue
            if info.lemma in NOT_ENTITY_WORDS | TITLE_NOUNS or root.lower_ in NOT_ENTITY_WORDS:
                dropped.append((word, "not_entity"))
                continue
            if word.lower() in BACKGROUND_PLACES:
                dropped.append((word, "not_entity"))  # "in the background" says where, and names nothing
                continue
            if any(t.lower_ in META_WORDS for t in span) or word.lower() in NOT_ENTITY_WORDS:
                dropped.append((word, "not_entity"))
                continue
            if info.lemma in CONTAINER_COLLECTIVES and not info.collective and of_complement(root) is not None:
                dropped.append((word, "quantifier"))  # "a couple of cups": 'cups' is the entity
                continue
            protected = info.animate or info.lemma in SCENE_WORDS | VISIBLE_EVENT_WORDS or is_body_part(info)
            if info.lexname in ABSTRACT_LEXNAMES and not protected:
                dropped.append((word, "abstract"))
                continue
            if info.animate:
                cat = "subject"
            elif info.lexname == "noun.location" or (
                root.ent_type_ in ("GPE", "LOC", "FAC") and not self._celestial(info.wn_key)
            ):
                cat = "background"  # a planet or the Moon is a thing in the frame: an object
            else:
                cat = "object"
            raw[cat].append(word)
        return raw, dropped
