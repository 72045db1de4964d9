"""The crops stage: RGBA reference crops (alpha = SAM mask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alchemist_data.config import StageConfig
from alchemist_data.stages.base import Stage, frames_of


@dataclass(kw_only=True)
class CropsConfig(StageConfig):
    """No settings of its own: the crop rules are the benchmark's."""


class CropsStage(Stage):
    """Reference crops: RGBA PNG of the box, alpha = SAM mask."""

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.benchmark_rules import rgba_crop
        from alchemist_data.media import decode_image, encode_png

        frames = frames_of(row)
        for det in row["detections"]:
            if det["is_detected"]:
                # stored cropped to the box, as rgba_crop takes it
                box_mask = decode_image(det["mask_png"]).astype(bool)
                det["crop_png"] = encode_png(rgba_crop(frames[det["frame_index"]], box_mask, det["box_xyxy_px"]))
