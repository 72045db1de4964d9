"""The extractor base class: ``setup()`` once per worker, then ``extract_batch`` per batch of captions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from alchemist_data.entities.captions import check_caption
from alchemist_data.entities.lexicon import Lexicon, get_lexicon
from alchemist_data.entities.result import EntityResult

if TYPE_CHECKING:
    from alchemist_data.stages.entities import EntitiesConfig


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
