"""The offline backend: spaCy noun chunks sorted by WordNet lexnames, then the shared rules."""

from __future__ import annotations

from typing import Any

from alchemist_data.entities.extractor import EntityExtractor
from alchemist_data.entities.result import CATEGORIES, EntityResult
from alchemist_data.entities.rules import apply_rules, head_info, is_body_part, of_complement
from alchemist_data.entities.tables import (
    ABSTRACT_LEXNAMES,
    CONTAINER_COLLECTIVES,
    META_WORDS,
    NOT_ENTITY_WORDS,
    PLURAL_QUANTIFIERS,
    PRONOUNS,
    QUANTIFIER_WORDS,
    SCENE_WORDS,
    VISIBLE_EVENT_WORDS,
)


class SpacyWordNetExtractor(EntityExtractor):
    """Offline backend: spaCy noun chunks sorted by WordNet lexnames, then :func:`apply_rules`.

    First sort, by the chunk head's first WordNet sense: person/animal (or a PERSON entity) -> subject;
    ``noun.location`` (or a GPE/LOC/FAC entity) -> background; anything else -> object. Nouns with abstract
    lexnames (:data:`ABSTRACT_LEXNAMES`: "a walk", "the day") and :data:`NOT_ENTITY_WORDS` are dropped.
    The rule table of :func:`apply_rules` then re-classifies (e.g. "clouds" object -> background), so the
    ``reclassified`` field shows what the rules changed for both backends.
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
            if tok.head.pos_ not in ("VERB", "AUX"):
                continue
            start = tok.i
            while start > 0 and doc[start - 1].i not in covered and doc[start - 1].pos_ in ("DET", "ADJ", "NUM"):
                start -= 1
            candidates.append((start, tok.i + 1, tok))
        phrases = []
        for start, end, root in sorted(candidates, key=lambda c: c[0]):
            drops: list[tuple[str, str]] = []
            while start < root.i:
                t = doc[start]
                low = t.lower_
                if (
                    low in QUANTIFIER_WORDS
                    or t.pos_ in ("DET", "NUM", "PRON", "PUNCT", "PART", "CCONJ")
                    or (t.dep_ in ("det", "predet", "nummod", "poss", "case", "quantmod"))
                ):
                    if low in PLURAL_QUANTIFIERS or t.pos_ == "NUM":
                        drops.append((t.text, "quantifier"))
                    start += 1
                else:
                    break
            phrases.append((doc[start:end], root, drops))
        return phrases

    def _verb_read_as_noun(self, root: Any) -> bool:
        """True for a plural-looking chunk head that is really the verb of a sentence without one."""
        if root.tag_ != "NNS" or root.i == 0 or root.sent.root.pos_ in ("VERB", "AUX"):
            return False
        prev = root.doc[root.i - 1]
        if prev.dep_ != "compound" or prev.head != root or prev.pos_ != "NOUN":
            return False
        assert self.lexicon is not None
        return self.lexicon.has_verb_sense(root.lower_)

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
            if root.pos_ not in ("NOUN", "PROPN"):
                dropped.append((word, "not_noun"))
                continue
            info = head_info(root, lex)
            if info.lemma in NOT_ENTITY_WORDS or root.lower_ in NOT_ENTITY_WORDS:
                dropped.append((word, "not_entity"))
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
            elif info.lexname == "noun.location" or root.ent_type_ in ("GPE", "LOC", "FAC"):
                cat = "background"
            else:
                cat = "object"
            raw[cat].append(word)
        return raw, dropped
