"""The faces stage: face boxes inside detected subjects, extended as the benchmark does, and their crops."""

from __future__ import annotations

from typing import Any

from alchemist_data.models.configs import FacesConfig
from alchemist_data.stages.base import Stage, frames_of

__all__ = ["FacesConfig", "FacesStage"]


class FacesStage(Stage):
    """Face boxes inside detected subjects, extended as the benchmark does (spec §7.3), and their RGB crops."""

    def setup(self) -> None:
        from alchemist_data.models.faces import build_face_detector

        self.detector = build_face_detector(self.cfg, device=self.model_device)
        if self.detector is not None:
            self.detector.setup()

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.benchmark_rules import extend_face_box, face_crop
        from alchemist_data.media import encode_png

        frames = frames_of(row)
        for det in row["detections"]:
            det["has_face"] = False
            if self.detector is None or not det["is_detected"] or det["category"] != "subject":
                continue
            frame = frames[det["frame_index"]]
            x0, y0, x1, y1 = det["box_xyxy_px"]
            # Detect inside the subject's box so the face belongs to this subject, not to a neighbour.
            faces = [f for f in self.detector.detect(frame[y0:y1, x0:x1]) if f[1] >= self.cfg.min_score]
            if not faces:
                continue
            (fx0, fy0, fx1, fy1), score = faces[0]
            H, W = frame.shape[:2]
            box = extend_face_box([fx0 + x0, fy0 + y0, fx1 + x0, fy1 + y0], W, H)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            det.update(
                has_face=True,
                face_box_xyxy_px=[int(v) for v in box],
                face_score=float(score),
                face_crop_png=encode_png(face_crop(frame, box)),
            )
