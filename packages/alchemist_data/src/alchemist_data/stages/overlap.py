"""The overlap stage: reject clips that copy a benchmark video (reason ``benchmark_overlap``; see overlap/).

It runs right after the frames stage and reads that stage's decoded reference frames and their times, so it decodes
nothing per clip. The reference index is built (or read from its cache) once per worker in ``setup()``. With
``overlap.reference_dir`` empty the stage is off: ``setup()`` builds nothing and every row passes through.
"""

from __future__ import annotations

from typing import Any

from alchemist_data.overlap import OverlapConfig, OverlapIndex, OverlapMatch
from alchemist_data.stages.base import RowReject, Stage, frames_of

__all__ = ["OverlapConfig", "OverlapStage"]


class OverlapStage(Stage):
    """Near-duplicate check of each clip's reference frames against the reference videos' index."""

    cfg: OverlapConfig

    def __init__(self, cfg: OverlapConfig, device: str = "cpu") -> None:
        super().__init__(cfg, device)
        self.index: OverlapIndex | None = None

    def setup(self) -> None:
        if self.enabled and self.index is None:
            self.index = OverlapIndex.load_or_build(self.cfg, device=self.model_device)

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        self.setup()
        self._batched(rows, lambda rs: self._index().query_many([_query(r) for r in rs]), self._apply)

    def process_row(self, row: dict[str, Any]) -> None:
        self._apply(row, self._index().query(*_query(row)))

    def _index(self) -> OverlapIndex:
        assert self.index is not None, "setup() builds the index before any batch"
        return self.index

    def _apply(self, row: dict[str, Any], match: OverlapMatch | None) -> None:
        if match is not None:
            raise RowReject("benchmark_overlap", match.detail())


def _query(row: dict[str, Any]) -> tuple[list[Any], list[float]]:
    """The clip's decoded reference frames and their times (seconds from the video's first frame)."""
    return frames_of(row), list(row["ref_times_s"])
