"""The overlap stage: reject clips that copy a benchmark video (reason ``benchmark_overlap``; see overlap/).

It runs right after the frames stage and reads that stage's decoded reference frames and their times, so it decodes
nothing per clip. The reference index is built (or read from its cache) once per worker in ``setup()``. With
``overlap.reference_dir`` empty the stage is off: ``setup()`` builds nothing and every row passes through.
"""

from __future__ import annotations

from typing import Any

from alchemist_data.overlap import OverlapConfig, OverlapIndex, OverlapMatch
from alchemist_data.profiles import Profile, Resources
from alchemist_data.stages import RowReject, Stage, frames_of


class OverlapStage(Stage):
    """Near-duplicate check of each clip's reference frames against the reference videos' index."""

    name = "overlap"

    def __init__(self, profile: Profile, cfg: OverlapConfig | None = None) -> None:
        super().__init__(profile)
        # Today's stages read their section off the profile; this one takes its own config (the NeMo pattern the
        # stages are moving to), falling back to the profile's ``overlap`` section.
        self.cfg = cfg if cfg is not None else getattr(profile, "overlap", OverlapConfig())
        self.cfg.validate()
        self.device = profile.device
        self.index: OverlapIndex | None = None

    @property
    def resources(self) -> Resources:
        return self.cfg.resources

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def setup(self) -> None:
        if self.enabled and self.index is None:
            self.index = OverlapIndex.load_or_build(self.cfg, device=self.device)

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
