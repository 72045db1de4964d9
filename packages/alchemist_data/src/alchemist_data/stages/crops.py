"""The crops stage: RGBA reference crops (alpha = SAM mask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alchemist_data.config import StageConfig
from alchemist_data.stages.base import Stage, frames_of, full_mask


@dataclass(kw_only=True)
class CropsConfig(StageConfig):
    """No settings of its own: the crop rules are the benchmark's."""


class CropsStage(Stage):
    """Reference crops: RGBA PNG of the box, alpha = SAM mask."""

    name = "crops"

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.crops import rgba_crop
        from alchemist_data.media import encode_png

        frames = frames_of(row)
        for det in row["detections"]:
            if det["is_detected"]:
                frame = frames[det["frame_index"]]
                mask = full_mask(det, frame.shape[:2])
                det["crop_png"] = encode_png(rgba_crop(frame, mask, det["box_xyxy_px"]))
