"""The grounding stage: GroundingDINO boxes for every subject/object word on each reference frame."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from alchemist_data.models.configs import GroundingConfig
from alchemist_data.stages.base import DETECTION, Stage, frames_of, split_per_clip

__all__ = ["GroundingConfig", "GroundingStage"]


class GroundingStage(Stage):
    """GroundingDINO boxes for every subject/object word on each reference frame (spec §7.3 box selection).

    All frames of the batch's clips go through one ``detect_many`` call, so a forward pass carries
    ``grounding.batch_size`` frames of different clips (each with its own caption) instead of one clip's three.
    """

    adds = [pa.field("detections", pa.list_(DETECTION))]

    def setup(self) -> None:
        from alchemist_data.models.grounding import build_grounder

        self.grounder = self._built(build_grounder)

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        def run_batch(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
            found = self.grounder.detect_many([(f, self._tags(row)) for row in rows for f in frames_of(row)])
            return split_per_clip(found, [len(row["frames"]) for row in rows])

        self._batched(rows, run_batch, self._apply)

    def process_row(self, row: dict[str, Any]) -> None:
        self._apply(row, self.grounder.detect(frames_of(row), self._tags(row)))

    @staticmethod
    def _tags(row: dict[str, Any]) -> list[str]:
        return list(row["subject_words"]) + list(row["object_words"])

    def _apply(self, row: dict[str, Any], found: list[dict[str, Any]]) -> None:
        words = [(w, "subject") for w in row["subject_words"]] + [(w, "object") for w in row["object_words"]]
        detections = []
        for frame_index, per_tag in enumerate(found):
            for word, category in words:
                det = per_tag.get(word)
                detections.append(
                    {
                        "frame_index": frame_index,
                        "entity_word": word,
                        "category": category,
                        "is_detected": False,
                        "drop_reason": None if det is not None else "no_box",
                        "box_xyxy_px": list(det.box_xyxy) if det is not None else None,
                        "box_score": float(det.score) if det is not None else None,
                    }
                )
        row["detections"] = detections
