"""Batched scorer: loads each model once per worker and scores many generated videos per call.

The official protocol scores one video per step (batch size 1) and runs DINO once per detected subject. Here a
call takes a list of videos: all their frames go through CLIP in a few large batches, all segmented subjects and
reference crops through DINO together, all faces through the face embedder together. The arithmetic of each
metric is the same (:mod:`alchemist_eval.metrics`), so the scores do not depend on how videos are grouped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alchemist_data import benchmark_rules as R
from alchemist_data.media import VideoError, read_frames_at_rate
from alchemist_eval import metrics as M
from alchemist_eval.models import EvalConfig, build_face_embedder, build_flow

ALL_METRICS = ("text", "video", "subject", "face", "dynamic")
MODE_METRICS = {"subject": ("text", "video", "subject", "dynamic"), "face": ("text", "video", "face", "dynamic")}

#: Score given to every requested metric of a generated video that is missing or unreadable (see docs/eval.md):
#: the benchmark counts an undetected subject/face or a static video as 0, and a video that does not exist cannot
#: be better than one in which nothing was found. Text-S / Vid-S get 0 too, so that skipping hard prompts never
#: raises an average.
MISSING_SCORE = 0.0

SCORE_COLUMNS = {
    "text": "text_s",
    "video": "video_s",
    "subject": "subject_s",
    "face": "face_s",
    "dynamic": "dynamic_d",
}


@dataclass
class GroundTruth:
    """Everything a metric compares a generated video with, for one benchmark clip."""

    clip_id: str
    caption: str
    frames: list[np.ndarray] = field(default_factory=list)  # GT RGB frames at 5/50/95 % of the clip
    subject_refs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # subject+object tag -> RGBA crops
    face_refs: list[np.ndarray] = field(default_factory=list)  # RGB face crops of the face-mode subject
    embeddings: dict[str, Any] | None = None  # precomputed (see Scorer.gt_embeddings); computed when None


@dataclass
class Job:
    gt: GroundTruth
    video_path: str | None  # None: no generated video with this clip id


class Scorer:
    """Scores generated videos against ground truth; ``setup()`` loads only the models the metrics need."""

    def __init__(self, cfg: EvalConfig, metrics: tuple[str, ...] | list[str], num_frames: int | None = None):
        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
        self.cfg = cfg
        self.metrics = tuple(m for m in ALL_METRICS if m in metrics)
        self.num_frames = num_frames
        self._ready = False
        self._gt_ready = False

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, ground_truth_only: bool = False) -> None:
        """Load the models of the requested metrics (only the GT encoders when ``ground_truth_only``)."""
        if self._ready or (ground_truth_only and self._gt_ready):
            return
        from alchemist_eval.models import FaceFinder

        if not self._gt_ready:
            self._setup_gt_encoders()
        if ground_truth_only:
            return

        if "subject" in self.metrics:
            from alchemist_data.models.grounding import build_grounder
            from alchemist_data.models.segmentation import build_segmenter

            self.grounder = build_grounder(self.cfg.grounding, device=self.cfg.device)
            self.grounder.setup()
            self.segmenter = build_segmenter(self.cfg.segmentation, device=self.cfg.device)
            self.segmenter.setup()
        if "face" in self.metrics:
            self.face_finder = FaceFinder(self.cfg.face, self.cfg.device)
            self.face_finder.setup()
        if "dynamic" in self.metrics:
            self.flow = build_flow(self.cfg)
            self.flow.setup()
        self._ready = True

    def _setup_gt_encoders(self) -> None:
        from alchemist_eval.models import ClipEncoder, DinoEncoder

        bs = self.cfg.encoder_batch_size
        if {"text", "video"} & set(self.metrics):
            self.clip = ClipEncoder(self.cfg.clip_model, self.cfg.device, bs, precision=self.cfg.clip_precision)
            self.clip.setup()
        if "subject" in self.metrics:
            self.dino = DinoEncoder(self.cfg.dino_model, self.cfg.device, bs)
            self.dino.setup()
        if "face" in self.metrics:
            self.face_embedder = build_face_embedder(self.cfg.face, self.cfg.device, bs)
            self.face_embedder.setup()
        self._gt_ready = True

    # ------------------------------------------------------------------------------------------------ GT
    def gt_embeddings(self, gts: list[GroundTruth]) -> list[dict[str, Any]]:
        """Ground-truth embeddings of many clips, batched (``prepare_msrvtt_personalization_embeddings.py``):
        ``text`` [D], ``frames`` [3, D] (CLIP), ``subjects`` {tag: [n_ref, D]} (DINO), ``faces`` [n, D]."""
        self.setup(ground_truth_only=True)
        out: list[dict[str, Any]] = [{} for _ in gts]
        if {"text", "video"} & set(self.metrics):
            texts = self.clip.encode_texts([g.caption for g in gts])
            frame_inputs = M.clip_preprocess_batch([f for g in gts for f in g.frames])
            frame_emb = self.clip.encode_images(frame_inputs) if len(frame_inputs) else None
            pos = 0
            for i, g in enumerate(gts):
                out[i]["text"] = texts[i]
                out[i]["frames"] = frame_emb[pos : pos + len(g.frames)] if frame_emb is not None else np.zeros((0, 1))
                pos += len(g.frames)
        if "subject" in self.metrics:
            owners, inputs = [], []
            for i, g in enumerate(gts):
                for tag, crops in g.subject_refs.items():
                    for crop in crops:
                        owners.append((i, tag))
                        inputs.append(M.dino_resize(R.white_where_alpha_zero(crop)))
            inputs = M.normalize_batch(inputs, M.IMAGENET_MEAN, M.IMAGENET_STD)
            emb = self.dino.encode(inputs) if len(inputs) else np.zeros((0, 1), np.float32)
            for i in range(len(gts)):
                out[i]["subjects"] = {}
            for (i, tag), e in zip(owners, emb, strict=True):
                out[i]["subjects"].setdefault(tag, []).append(e)
            for i in range(len(gts)):
                out[i]["subjects"] = {t: np.stack(v) for t, v in out[i]["subjects"].items()}
        if "face" in self.metrics:
            crops = [c for g in gts for c in g.face_refs]
            emb = self.face_embedder.embed(crops)
            pos = 0
            for i, g in enumerate(gts):
                out[i]["faces"] = emb[pos : pos + len(g.face_refs)]
                pos += len(g.face_refs)
        return out

    # ------------------------------------------------------------------------------------------------ score
    def score(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """One result row per job, in order. Never raises for a bad generated video: it becomes a miss."""
        self.setup()
        rows: list[dict[str, Any]] = []
        videos: list[np.ndarray | None] = []
        for job in jobs:
            row: dict[str, Any] = {
                "clip_id": job.gt.clip_id,
                "video": job.video_path,
                "status": "ok",
                "detail": None,
                "num_frames": 0,
                "fps": None,
                "width_px": None,
                "height_px": None,
            }
            frames = None
            if job.video_path is None:
                row.update(status="missing_file", detail="no generated video named after this clip id")
            else:
                try:
                    decoded = read_frames_at_rate(job.video_path, self.num_frames)
                    frames = decoded.frames
                    row.update(
                        num_frames=int(len(frames)),
                        fps=float(decoded.fps),
                        width_px=int(frames.shape[2]),
                        height_px=int(frames.shape[1]),
                    )
                    if self.num_frames is not None and len(frames) < self.num_frames:
                        row["detail"] = f"only {len(frames)} of the {self.num_frames} frames asked for"
                except VideoError as err:
                    row.update(status=err.reason, detail=err.detail)
            for m in self.metrics:
                row[SCORE_COLUMNS[m]] = MISSING_SCORE if frames is None else None
            rows.append(row)
            videos.append(frames)

        ok = [i for i, v in enumerate(videos) if v is not None]
        if not ok:
            return rows
        gts = [jobs[i].gt for i in ok]
        todo = [k for k, g in enumerate(gts) if g.embeddings is None]
        fresh = self.gt_embeddings([gts[k] for k in todo]) if todo else []
        gt_emb = [g.embeddings for g in gts]
        for k, e in zip(todo, fresh, strict=True):
            gt_emb[k] = e

        if {"text", "video"} & set(self.metrics):
            self._score_clip(ok, videos, rows, gt_emb)
        if "subject" in self.metrics:
            self._score_subject(ok, videos, rows, gts, gt_emb)
        if "face" in self.metrics:
            self._score_face(ok, videos, rows, gt_emb)
        if "dynamic" in self.metrics:
            for i in ok:
                rows[i]["dynamic_d"] = self._dynamic(videos[i], rows[i]["fps"])
        for row in rows:  # NaN (metric does not apply to this clip) -> null in Parquet
            for col in SCORE_COLUMNS.values():
                if isinstance(row.get(col), float) and math.isnan(row[col]):
                    row[col] = None
        return rows

    def _score_clip(self, ok, videos, rows, gt_emb) -> None:
        # preprocess and encode one encoder batch at a time: the float inputs of a whole chunk of videos would be
        # hundreds of MB, and a batch that fits in cache is faster to normalise
        frames = [f for i in ok for f in videos[i]]
        bs = max(1, self.clip.batch_size)
        emb = np.concatenate(
            [self.clip.encode_images(M.clip_preprocess_batch(frames[j : j + bs])) for j in range(0, len(frames), bs)]
        )
        pos = 0
        for k, i in enumerate(ok):
            e = emb[pos : pos + len(videos[i])]
            pos += len(videos[i])
            if "text" in self.metrics:
                rows[i]["text_s"] = M.text_similarity(e, gt_emb[k]["text"])
            if "video" in self.metrics:
                frames_gt = gt_emb[k]["frames"]
                rows[i]["video_s"] = M.video_similarity(e, frames_gt) if len(frames_gt) else float("nan")

    def _score_subject(self, ok, videos, rows, gts, gt_emb) -> None:
        seg_cfg = self.cfg.segmentation
        # 1. GroundingDINO on every frame of the chunk, each frame with its own video's caption, ``batch_size`` frames
        # per forward whichever video they come from
        requests, where = [], []  # where: (row k, frame f)
        for k, i in enumerate(ok):
            tags = [t for t, e in gt_emb[k]["subjects"].items() if len(e)]
            rows[i]["num_tags"] = len(tags)
            rows[i]["num_tag_detections"] = 0
            for f, frame in enumerate(videos[i] if tags else ()):
                requests.append((frame, tags))
                where.append((k, f))
        detections = self.grounder.detect_many(requests)
        # 2. SAM on every frame with a detection: all its boxes in one prompt batch, ``batch_size`` frames per
        # image-encoder forward
        found_of, seg_requests = [], []
        for (k, f), (frame, tags), per_tag in zip(where, requests, detections, strict=True):
            found = [(t, per_tag[t]) for t in tags if t in per_tag]
            if found:
                found_of.append((k, f, frame, found))
                seg_requests.append((frame, [list(d.box_xyxy) for _, d in found]))
        masks = self.segmenter.segment_many(seg_requests)
        # 3. the benchmark's checks (a box without area is kept, as the benchmark keeps it: its subject image is all
        # white), then every kept subject of the chunk through DINO together
        crops, owners = [], []  # (row k, frame f, tag)
        for (k, f, frame, found), results in zip(found_of, masks, strict=True):
            for (tag, det), res in zip(found, results, strict=True):
                box = det.box_xyxy
                if (
                    R.mask_drop_reason(res.iou_score, res.mask, box, seg_cfg.iou_threshold, seg_cfg.box_tolerance_px)
                    is not None
                ):
                    continue
                crops.append(M.dino_resize(R.masked_subject_crop(frame, box, R.crop_to_box(res.mask, box))))
                owners.append((k, f, tag))
        bs = max(1, self.dino.batch_size)
        emb = (
            np.concatenate(
                [
                    self.dino.encode(M.normalize_batch(crops[j : j + bs], M.IMAGENET_MEAN, M.IMAGENET_STD))
                    for j in range(0, len(crops), bs)
                ]
            )
            if crops
            else np.zeros((0, 1), np.float32)
        )
        per_video: dict[int, list[dict[str, np.ndarray]]] = {k: [{} for _ in videos[i]] for k, i in enumerate(ok)}
        for (k, f, tag), e in zip(owners, emb, strict=True):
            per_video[k][f][tag] = e
            rows[ok[k]]["num_tag_detections"] += 1
        for k, i in enumerate(ok):
            rows[i]["subject_s"] = M.subject_similarity(per_video[k], gt_emb[k]["subjects"], len(videos[i]))

    def _score_face(self, ok, videos, rows, gt_emb) -> None:
        crops, owners = [], []
        for k, i in enumerate(ok):
            rows[i]["num_face_frames"] = 0
            if not len(gt_emb[k].get("faces", [])):
                continue
            frames = list(videos[i])
            for frame, box in zip(frames, self.face_finder.find_batch(frames), strict=True):
                if box is not None:
                    crops.append(R.face_crop(frame, box))
                    owners.append(k)
        emb = self.face_embedder.embed(crops)
        by_video: dict[int, list[np.ndarray]] = {}
        for k, e in zip(owners, emb, strict=True):
            by_video.setdefault(k, []).append(e)
        for k, i in enumerate(ok):
            found = np.stack(by_video[k]) if k in by_video else np.zeros((0, 0))
            rows[i]["num_face_frames"] = int(len(by_video.get(k, [])))
            rows[i]["face_s"] = M.face_similarity(found, gt_emb[k].get("faces", np.zeros((0, 0))), len(videos[i]))

    def _dynamic(self, frames: np.ndarray, fps: float) -> int:
        sampled = frames[M.dynamic_sample_indices(len(frames), fps)]
        flows = self.flow.flows(sampled)
        h, w = frames.shape[1:3]
        return M.dynamic_degree_from_flows(flows, h, w)
