"""The background stage: the middle frame with its foreground inpainted (spec §2.4)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from alchemist_data.models.configs import BackgroundConfig
from alchemist_data.stages.base import Stage, columns, frames_of, full_mask

__all__ = ["BackgroundConfig", "BackgroundStage"]


class BackgroundStage(Stage):
    """Background plate: middle frame with the dilated, hole-filled union of its masks inpainted (spec §2.4)."""

    adds = columns(
        {
            "background_word": pa.string(),
            "background_jpg": pa.binary(),
            "foreground_mask_png": pa.binary(),
            "foreground_area_frac": pa.float32(),
        }
    )

    def setup(self) -> None:
        from alchemist_data.models.inpaint import build_inpainter

        self.inpainter = self._built(build_inpainter)

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.benchmark_rules import foreground_mask
        from alchemist_data.media import encode_jpg, encode_png

        cfg = self.cfg
        middle = frames_of(row)[1]
        shape = middle.shape[:2]
        masks = [full_mask(d, shape) for d in row["detections"] if d["is_detected"] and d["frame_index"] == 1]
        fg = foreground_mask(masks, shape, kernel_px=cfg.dilate_kernel_px, iterations=cfg.dilate_iterations)
        word = row["background_words"][0] if row["background_words"] else None
        prompt = word if cfg.prompt_source == "entity_word" else None  # None -> the configured fixed prompt
        plate = self.inpainter.inpaint(middle, fg, prompt) if fg.any() else middle
        row.update(
            background_word=word,
            background_jpg=encode_jpg(plate),
            foreground_mask_png=encode_png(fg),
            foreground_area_frac=float(fg.mean()),
        )
