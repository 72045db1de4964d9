"""The curation stages (DESIGN.md §3): plain classes, no Ray import.

Each stage has ``name``, ``resources``, ``batch_size``, ``setup()`` (load models once per worker) and
``process_batch(table) -> table``. Stages pass one Arrow *work table* along, one row per clip; each stage adds its
columns. A row that fails or is filtered gets ``reject_stage`` / ``reject_reason`` / ``reject_detail`` and every
later stage passes it through untouched, so one bad video never stops a job and nothing is dropped silently.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from alchemist_data.profiles import Profile, Resources

log = logging.getLogger(__name__)

# Columns every work table starts with (built by the runner from the manifest).
WORK_FIELDS = [
    pa.field("clip_id", pa.string()),
    pa.field("video", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("shard", pa.string()),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
]
WORK_SCHEMA = pa.schema(WORK_FIELDS)

BOX = pa.list_(pa.int32())
# One grounded entity word on one reference frame; later stages fill the mask, face and crop fields.
DETECTION = pa.struct(
    [
        pa.field("frame_index", pa.int8()),
        pa.field("entity_word", pa.string()),
        pa.field("category", pa.string()),
        pa.field("is_detected", pa.bool_()),
        pa.field("drop_reason", pa.string()),
        pa.field("box_xyxy_px", BOX),
        pa.field("box_score", pa.float32()),
        pa.field("mask_iou_score", pa.float32()),
        pa.field("mask_area_frac", pa.float32()),
        pa.field("mask_png", pa.binary()),
        pa.field("crop_png", pa.binary()),
        pa.field("has_face", pa.bool_()),
        pa.field("face_box_xyxy_px", BOX),
        pa.field("face_score", pa.float32()),
        pa.field("face_crop_png", pa.binary()),
    ]
)


class RowReject(Exception):
    """Raised inside a stage to reject the current clip with a reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Stage:
    name = "stage"
    #: columns this stage adds to the work table
    adds: list[pa.Field] = []

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    #: profile section (e.g. "grounding") whose ``resources`` and ``batch_size`` this stage uses; None: CPU defaults
    config_section: str | None = None

    @property
    def resources(self) -> Resources:
        return getattr(self.profile, self.config_section).resources if self.config_section else Resources()

    @property
    def batch_size(self) -> int:
        return getattr(self.profile, self.config_section).batch_size if self.config_section else 16

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        """Mutate the (non-rejected) rows in place. Default: one row at a time through ``process_row``."""
        for row in rows:
            self._guard(row, self.process_row)

    def process_row(self, row: dict[str, Any]) -> None:
        raise TypeError(f"{type(self).__name__} must override process_row or process_rows")

    def process_batch(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            for f in self.adds:
                row.setdefault(f.name, None)
        live = [r for r in rows if r["reject_reason"] is None]
        if live:
            self.process_rows(live)
        return pa.Table.from_pylist(rows, schema=output_schema(table.schema, self.adds))

    def _batched(
        self,
        rows: list[dict[str, Any]],
        run_batch: Callable[[list[dict[str, Any]]], list[Any]],
        apply: Callable[[dict[str, Any], Any], None],
    ) -> None:
        """One model call for the whole batch (``run_batch`` gives one result per row), each result applied under
        ``_guard``; if the batched call itself fails, retry clip by clip to isolate the bad clip."""
        try:
            results = run_batch(rows)
        except Exception:
            log.warning("stage %s: batched call failed, retrying clip by clip", self.name, exc_info=True)
            for row in rows:
                self._guard(row, self.process_row)
            return
        for row, result in zip(rows, results, strict=True):
            self._guard(row, lambda r, result=result: apply(r, result))

    def _guard(self, row: dict[str, Any], fn: Callable[[dict[str, Any]], None]) -> None:
        """Run ``fn(row)``; turn any failure into a reject row instead of failing the batch."""
        try:
            fn(row)
        except RowReject as rej:
            reject(row, self.name, rej.reason, rej.detail)
        except Exception as err:  # one bad clip must never stop the job; the traceback goes to the log
            log.warning("stage %s failed on %s: %s", self.name, row.get("clip_id"), traceback.format_exc(limit=3))
            reason = getattr(err, "reason", None) or "error"
            detail = getattr(err, "detail", None) or f"{type(err).__name__}: {err}"
            reject(row, self.name, reason, detail)


def reject(row: dict[str, Any], stage: str, reason: str, detail: str) -> None:
    row["reject_stage"], row["reject_reason"], row["reject_detail"] = stage, reason, detail


def output_schema(schema: pa.Schema, adds: list[pa.Field]) -> pa.Schema:
    for f in adds:
        if schema.get_field_index(f.name) < 0:
            schema = schema.append(f)
    return schema


def _split(items: list[Any], sizes: list[int]) -> list[list[Any]]:
    """Cut a flat list of per-frame results back into per-clip lists."""
    out, pos = [], 0
    for n in sizes:
        out.append(items[pos : pos + n])
        pos += n
    return out


def frames_of(row: dict[str, Any]) -> list[np.ndarray]:
    h, w = row["frame_height_px"], row["frame_width_px"]
    return [np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3) for b in row["frames"]]


# --------------------------------------------------------------------------------------------------------------
class FramesStage(Stage):
    """Probe the video and decode the reference frames at 5/50/95 % of the clip (accurate seeking)."""

    name = "frames"
    adds = [
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width_px", pa.int32()),
        pa.field("height_px", pa.int32()),
        pa.field("ref_times_s", pa.list_(pa.float64())),
        pa.field("frames", pa.list_(pa.binary())),  # raw RGB bytes, frame_height_px x frame_width_px x 3
        pa.field("frame_width_px", pa.int32()),
        pa.field("frame_height_px", pa.int32()),
    ]

    @property
    def batch_size(self) -> int:
        return 4

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.video import reference_frames

        cfg = self.profile.frames
        info, times, frames = reference_frames(
            row["video"],
            row["start_s"],
            row["end_s"],
            fractions=tuple(cfg.fractions),
            max_side_px=cfg.max_side_px,
            seek=cfg.seek,
        )
        # Times count from the video's first frame (as players and `ffmpeg -ss` do), whatever the container offset.
        start = row["start_s"] if row["start_s"] is not None else 0.0
        end = min(row["end_s"] if row["end_s"] is not None else info.duration_s, info.duration_s)
        row.update(
            start_s=float(start),
            end_s=float(end),
            duration_s=float(end - start),
            fps=float(info.fps) if info.fps else None,
            width_px=info.width_px,
            height_px=info.height_px,
            ref_times_s=[float(t) for t in times],
            frames=[np.ascontiguousarray(f).tobytes() for f in frames],
            frame_height_px=int(frames[0].shape[0]),
            frame_width_px=int(frames[0].shape[1]),
        )


class EntitiesStage(Stage):
    """Entity words (subject / object / background) from the caption, with the paper's filter rules."""

    name = "entities"
    config_section = "entities"
    adds = [
        pa.field("subject_words", pa.list_(pa.string())),
        pa.field("object_words", pa.list_(pa.string())),
        pa.field("background_words", pa.list_(pa.string())),
    ]

    def setup(self) -> None:
        from alchemist_data.entities import build_extractor

        self.extractor = build_extractor(self.profile.entities, device=self.profile.device)
        self.extractor.setup()

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


class GroundingStage(Stage):
    """GroundingDINO boxes for every subject/object word on each reference frame (spec §7.3 box selection).

    All frames of the batch's clips go through one ``detect_many`` call, so a forward pass carries
    ``grounding.batch_size`` frames of different clips (each with its own caption) instead of one clip's three.
    """

    name = "grounding"
    config_section = "grounding"
    adds = [pa.field("detections", pa.list_(DETECTION))]

    def setup(self) -> None:
        from alchemist_data.grounding import build_grounder

        self.grounder = build_grounder(self.profile.grounding, device=self.profile.device)
        self.grounder.setup()

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        def run_batch(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
            found = self.grounder.detect_many([(f, self._tags(row)) for row in rows for f in frames_of(row)])
            return _split(found, [len(row["frames"]) for row in rows])

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


class SegmentationStage(Stage):
    """SAM mask per grounded box, kept when SAM's IoU score passes and the mask fits its box (spec §7.3).

    All boxed frames of the batch's clips go through one ``segment_many`` call (``segmentation.batch_size`` frames
    per image-encoder forward); each frame's boxes are decoded together, as in the benchmark.
    """

    name = "segmentation"
    config_section = "segmentation"

    def setup(self) -> None:
        from alchemist_data.segmentation import build_segmenter

        self.segmenter = build_segmenter(self.profile.segmentation, device=self.profile.device)
        self.segmenter.setup()

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        def run_batch(rows: list[dict[str, Any]]) -> list[tuple[list[Any], list[list[Any]]]]:
            jobs = [self._jobs(row) for row in rows]
            results = self.segmenter.segment_many([(frame, boxes) for job in jobs for _, frame, boxes in job])
            return list(zip(jobs, _split(results, [len(job) for job in jobs]), strict=True))

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
        from alchemist_data.crops import encode_png, mask_crop
        from alchemist_data.segmentation import is_valid_mask_for_box

        cfg = self.profile.segmentation
        for (boxed, _, _), frame_results in zip(jobs, results, strict=True):
            for det, res in zip(boxed, frame_results, strict=True):
                det["mask_iou_score"] = float(res.iou_score)
                if not res.iou_score > cfg.iou_threshold:
                    det["drop_reason"] = "low_mask_iou"
                    continue
                if not is_valid_mask_for_box(res.mask, det["box_xyxy_px"], cfg.box_tolerance_px):
                    det["drop_reason"] = "invalid_box"
                    continue
                det["is_detected"] = True
                det["mask_area_frac"] = float(res.mask.mean())
                det["mask_png"] = encode_png(mask_crop(res.mask, det["box_xyxy_px"]))
        if not any(d["is_detected"] and d["category"] == "subject" for d in row["detections"]):
            words = ", ".join(row["subject_words"])
            raise RowReject("subject_not_detected", f"no subject word ({words}) was grounded and segmented")


def full_mask(det: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The frame-sized boolean mask of a detection, rebuilt from its box-cropped mask PNG."""
    from alchemist_data.crops import decode_png

    x0, y0, x1, y1 = det["box_xyxy_px"]
    crop = decode_png(det["mask_png"]).astype(bool)
    if crop.ndim == 3:
        crop = crop[..., 0]
    mask = np.zeros(shape, dtype=bool)
    h, w = mask[y0:y1, x0:x1].shape
    mask[y0 : y0 + h, x0 : x0 + w] = crop[:h, :w]
    return mask


class FacesStage(Stage):
    """Face boxes inside detected subjects, extended as the benchmark does (spec §7.3), and their RGB crops."""

    name = "faces"
    config_section = "faces"

    def setup(self) -> None:
        from alchemist_data.faces import build_face_detector

        self.detector = build_face_detector(self.profile.faces, device=self.profile.device)
        if self.detector is not None:
            self.detector.setup()

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.crops import encode_png
        from alchemist_data.faces import extend_face_box

        frames = frames_of(row)
        for det in row["detections"]:
            det["has_face"] = False
            if self.detector is None or not det["is_detected"] or det["category"] != "subject":
                continue
            frame = frames[det["frame_index"]]
            x0, y0, x1, y1 = det["box_xyxy_px"]
            # Detect inside the subject's box so the face belongs to this subject, not to a neighbour.
            faces = [f for f in self.detector.detect(frame[y0:y1, x0:x1]) if f[1] >= self.profile.faces.min_score]
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
                face_crop_png=encode_png(np.ascontiguousarray(frame[box[1] : box[3], box[0] : box[2]])),
            )


class CropsStage(Stage):
    """Reference crops: RGBA PNG of the box, alpha = SAM mask."""

    name = "crops"

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.crops import encode_png, rgba_crop

        frames = frames_of(row)
        for det in row["detections"]:
            if det["is_detected"]:
                frame = frames[det["frame_index"]]
                mask = full_mask(det, frame.shape[:2])
                det["crop_png"] = encode_png(rgba_crop(frame, mask, det["box_xyxy_px"]))


class BackgroundStage(Stage):
    """Background plate: middle frame with the dilated, hole-filled union of its masks inpainted (spec §2.4)."""

    name = "background"
    config_section = "background"
    adds = [
        pa.field("background_word", pa.string()),
        pa.field("background_jpg", pa.binary()),
        pa.field("foreground_mask_png", pa.binary()),
        pa.field("foreground_area_frac", pa.float32()),
    ]

    def setup(self) -> None:
        from alchemist_data.background import build_inpainter

        self.inpainter = build_inpainter(self.profile.background, device=self.profile.device)
        self.inpainter.setup()

    def process_row(self, row: dict[str, Any]) -> None:
        from alchemist_data.background import foreground_mask
        from alchemist_data.crops import encode_jpg, encode_png

        cfg = self.profile.background
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


STAGE_CLASSES: list[type[Stage]] = [
    FramesStage,
    EntitiesStage,
    GroundingStage,
    SegmentationStage,
    FacesStage,
    CropsStage,
    BackgroundStage,
]


def build_stages(profile: Profile) -> list[Stage]:
    return [cls(profile) for cls in STAGE_CLASSES]


# --------------------------------------------------------------------------------------------------------------
def split_outputs(table: pa.Table, profile: Profile) -> dict[str, pa.Table]:
    """Turn a finished work table into the four contract tables."""
    from alchemist_data import schema

    clips, entities, backgrounds, rejects = [], [], [], []
    random_models = profile.has_random_models
    for row in table.to_pylist():
        if row["reject_reason"] is not None:
            rejects.append(
                {
                    "video": row["video"],
                    "clip_id": row["clip_id"],
                    "stage": row["reject_stage"],
                    "reason": row["reject_reason"],
                    "detail": row["reject_detail"],
                    "caption": row["caption"],
                    "shard": row["shard"],
                }
            )
            continue
        dets = row.get("detections") or []
        clips.append(
            {
                **{k: row.get(k) for k in schema.CLIPS.names if k in row},
                "num_entities_detected": len({d["entity_word"] for d in dets if d["is_detected"]}),
                "has_random_models": random_models,
                "profile": profile.name,
            }
        )
        for d in dets:
            entities.append(
                {
                    **d,
                    "clip_id": row["clip_id"],
                    "frame_time_s": row["ref_times_s"][d["frame_index"]],
                    "frame_width_px": row["frame_width_px"],
                    "frame_height_px": row["frame_height_px"],
                    "is_random_model": random_models,
                }
            )
        if row.get("background_jpg") is not None:
            backgrounds.append(
                {
                    "clip_id": row["clip_id"],
                    "background_word": row["background_word"],
                    "frame_time_s": row["ref_times_s"][1],
                    "width_px": row["frame_width_px"],
                    "height_px": row["frame_height_px"],
                    "foreground_area_frac": row["foreground_area_frac"],
                    "inpaint_backend": profile.background.backend,
                    "image_jpg": row["background_jpg"],
                    "foreground_mask_png": row["foreground_mask_png"],
                }
            )
    out = {}
    for name, rows in (("clips", clips), ("entities", entities), ("backgrounds", backgrounds), ("rejects", rejects)):
        sch = schema.TABLES[name]
        out[name] = pa.Table.from_pylist([{k: r.get(k) for k in sch.names} for r in rows], schema=sch)
    return out
