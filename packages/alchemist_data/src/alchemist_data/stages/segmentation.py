"""The segmentation stage: a SAM mask per grounded box, kept by the benchmark's rules (spec §7.3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from alchemist_data.models.configs import SegmentationConfig
from alchemist_data.stages.base import RowReject, Stage, frames_of, split_per_clip

__all__ = ["SegmentationConfig", "SegmentationStage"]


class SegmentationStage(Stage):
    """SAM mask per grounded box, kept by the benchmark's rule (``benchmark_rules.mask_drop_reason``, spec §7.3).

    All boxed frames of the batch's clips go through one ``segment_many`` call (``segmentation.batch_size`` frames
    per image-encoder forward); each frame's boxes are decoded together, as in the benchmark.
    """

    def setup(self) -> None:
        from alchemist_data.models.segmentation import build_segmenter

        self.segmenter = self._built(build_segmenter)

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        def run_batch(rows: list[dict[str, Any]]) -> list[tuple[list[Any], list[list[Any]]]]:
            jobs = [self._jobs(row) for row in rows]
            results = self.segmenter.segment_many([(frame, boxes) for job in jobs for _, frame, boxes in job])
            return list(zip(jobs, split_per_clip(results, [len(job) for job in jobs]), strict=True))

        self._batched(rows, run_batch, lambda row, job_results: self._apply(row, *job_results))

    def process_row(self, row: dict[str, Any]) -> None:
        job = self._jobs(row)
        self._apply(row, job, self.segmenter.segment_many([(frame, boxes) for _, frame, boxes in job]))

    @staticmethod
    def _jobs(row: dict[str, Any]) -> list[tuple[list[dict[str, Any]], np.ndarray, list[list[int]]]]:
        """(the frame's boxed detections, the frame, their boxes) for each frame of the row that has a box."""
        jobs = []
        for frame_index, frame in enumerate(frames_of(row)):
            boxed = [d for d in row["detections"] if d["frame_index"] == frame_index and d["box_xyxy_px"] is not None]
            if boxed:
                jobs.append((boxed, frame, [d["box_xyxy_px"] for d in boxed]))
        return jobs

    def _apply(self, row: dict[str, Any], jobs: list[Any], results: list[list[Any]]) -> None:
        from alchemist_data.benchmark_rules import crop_to_box, mask_drop_reason
        from alchemist_data.media import encode_png

        cfg = self.cfg
        for (boxed, _, _), frame_results in zip(jobs, results, strict=True):
            for det, res in zip(boxed, frame_results, strict=True):
                det["mask_iou_score"] = float(res.iou_score)
                # The benchmark keeps a box without area (scored as an all-white subject); curation drops it, since
                # an empty reference crop can neither be stored nor teach the model anything.
                reason = mask_drop_reason(
                    res.iou_score,
                    res.mask,
                    det["box_xyxy_px"],
                    cfg.iou_threshold,
                    cfg.box_tolerance_px,
                    allow_empty_box=False,
                )
                if reason is not None:
                    det["drop_reason"] = reason
                    continue
                det["is_detected"] = True
                det["mask_area_frac"] = float(res.mask.mean())
                det["mask_png"] = encode_png(crop_to_box(res.mask, det["box_xyxy_px"]).astype(bool))
        if not any(d["is_detected"] and d["category"] == "subject" for d in row["detections"]):
            words = ", ".join(row["subject_words"])
            raise RowReject("subject_not_detected", f"no subject word ({words}) was grounded and segmented")
