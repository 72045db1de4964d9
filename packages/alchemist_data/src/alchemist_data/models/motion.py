"""The motion pre-filter's models (paper Appendix A.1, undesirable classes 1-2): optical-flow motion scores and the
optional VideoMAE classifier of the paper's four undesirable classes plus "ok".

Motion is measured on pairs of frames a few frames apart (:class:`MotionMeter`). For each pair:

* ``motion``: the mean of the top 5 % flow magnitudes (the statistic of the benchmark's Dync-D), divided by the
  number of frames between the two and by the frame diagonal, so it reads "diagonals per frame" at any resolution;
* ``foreground``: the same after subtracting the best-fit similarity transform (pan, zoom, rotation) fitted to the
  flow with RANSAC: what moves on its own. A still image under a Ken Burns pan or zoom (class 1) has a large
  ``motion`` but a ``foreground`` near zero.

A clip's scores are the means over its pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alchemist_data.models.base import LazyModel, load_pretrained
from alchemist_data.schema import UNDESIRABLE_CLASSES

#: The VideoMAE classifier's labels: the paper's four undesirable classes and "ok".
VIDEO_CLASSES: tuple[str, ...] = ("ok", *UNDESIRABLE_CLASSES)
TOP_FRACTION = 0.05  # top 5 % of flow magnitudes, as Dync-D


def top_mean(values: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest ``fraction`` of ``values`` (at least one value)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    k = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def camera_flow(flow: np.ndarray) -> np.ndarray:
    """The flow of the similarity transform (translation, zoom, rotation) that best explains ``flow`` (RANSAC on a
    grid of about 2000 points); zero when no transform can be fitted (e.g. a flat frame)."""
    import cv2

    h, w = flow.shape[:2]
    step = max(1, int(np.sqrt(h * w / 2000)))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()].astype(np.float32)
    # RANSAC draws from OpenCV's global RNG; a fixed seed makes a clip's score the same in every worker and run.
    cv2.setRNGSeed(0)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
    if m is None:
        return np.zeros_like(flow)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
    fy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
    return np.stack([fx, fy], -1).astype(flow.dtype)


def pair_scores(flow: np.ndarray, frames_apart: float) -> tuple[float, float]:
    """(motion, foreground motion) of one flow field in frame diagonals per frame (module docstring).

    The foreground score skips pixels that the camera motion carries out of the frame: they have no match in the
    second frame, so their flow is noise, and under a fast pan they would fill the top 5 %.
    """
    h, w = flow.shape[:2]
    scale = 1.0 / (np.hypot(h, w) * max(frames_apart, 1e-9))
    motion = top_mean(np.linalg.norm(flow, axis=-1)) * scale
    camera = camera_flow(flow)
    residual = np.linalg.norm(flow - camera, axis=-1)
    yy, xx = np.mgrid[0:h, 0:w]
    margin = 2  # px: DIS is unreliable at the very edge too
    x2, y2 = xx + camera[..., 0], yy + camera[..., 1]
    stays = (x2 >= margin) & (x2 <= w - 1 - margin) & (y2 >= margin) & (y2 <= h - 1 - margin)
    foreground = top_mean(residual[stays] if stays.any() else residual) * scale
    return motion, foreground


class MotionMeter(LazyModel):
    """Motion scores of frame pairs with OpenCV DIS (``dis``) or RAFT (``raft``, torchvision raft_large weights)."""

    name = "motion"

    def __init__(self, backend: str = "dis", device: str = "cpu", raft_checkpoint: str = "", raft_iters: int = 20):
        super().__init__(device)
        if backend not in ("dis", "raft"):
            raise ValueError(f"motion backend must be dis or raft, got {backend!r}")
        self.backend, self.raft_checkpoint, self.raft_iters = backend, raft_checkpoint, raft_iters

    def _load(self) -> None:
        from alchemist_data.models.flow import DisFlow, RaftFlow

        if self.backend == "raft":
            self.flow = RaftFlow(
                self.raft_checkpoint, self.raft_iters, self.device, setting="--set motion.raft_checkpoint=PATH"
            )
        else:
            self.flow = DisFlow()
        self.flow.setup()

    def measure(
        self, firsts: Sequence[np.ndarray], seconds: Sequence[np.ndarray], frames_apart: Sequence[float]
    ) -> list[tuple[float, float]]:
        """(motion, foreground) per pair; frames are RGB uint8 HxWx3, all the same size."""
        from alchemist_data.models.flow import unpad

        self.setup()
        if not (len(firsts) == len(seconds) == len(frames_apart)):
            raise ValueError(
                f"got {len(firsts)} first frames, {len(seconds)} second frames and {len(frames_apart)} "
                "frame gaps; give one of each per pair"
            )
        if not len(firsts):
            return []
        h, w = np.asarray(firsts[0]).shape[:2]
        flows = self.flow.pairs(np.stack(firsts), np.stack(seconds))
        return [pair_scores(unpad(f, h, w), gap) for f, gap in zip(flows, frames_apart, strict=True)]


def _no_random(model_id: str) -> None:
    raise ValueError(
        f"there is no random VideoMAE classifier ({model_id!r}); give a checkpoint directory or hub id "
        "in motion.videomae_model, or leave it empty"
    )


class VideoClassifier(LazyModel):
    """A fine-tuned ``VideoMAEForVideoClassification`` over the paper's four undesirable classes plus "ok", from a
    local directory or a hub id. Its ``config.id2label`` must name exactly :data:`VIDEO_CLASSES` (any order).

    The preprocessing is the checkpoint's own ``preprocessor_config.json`` when it has one, else VideoMAE's standard
    one at the model's ``image_size``.
    """

    name = "videomae"

    def __init__(self, model_id: str, device: str = "cpu") -> None:
        super().__init__(device)
        self.model_id = model_id

    def _load(self) -> None:
        from transformers import VideoMAEForVideoClassification, VideoMAEImageProcessor

        (self.model,) = load_pretrained(
            self.model_id, "VideoMAE classifier", (VideoMAEForVideoClassification,), _no_random
        )
        cfg = self.model.config
        labels = [str(cfg.id2label[i]) for i in range(cfg.num_labels)]
        if sorted(labels) != sorted(VIDEO_CLASSES):
            raise ValueError(
                f"VideoMAE classifier {self.model_id!r} has labels {labels}; it must have exactly the paper's classes "
                f"{list(VIDEO_CLASSES)} (set id2label in its config.json)"
            )
        self.labels = labels
        try:
            self.processor = VideoMAEImageProcessor.from_pretrained(self.model_id)
        except OSError:  # a checkpoint saved without its processor: VideoMAE's standard preprocessing
            size = cfg.image_size
            self.processor = VideoMAEImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        self.model.to(self.device).eval()

    @property
    def num_frames(self) -> int:
        self.setup()
        return int(self.model.config.num_frames)

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) the processor crops to; decoding at this size spares a resize."""
        self.setup()
        crop = self.processor.crop_size
        return int(crop["width"]), int(crop["height"])

    def classify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(label, probability) of the most likely class for each clip of ``num_frames`` RGB uint8 frames."""
        import torch

        self.setup()
        for i, c in enumerate(clips):
            if np.asarray(c).shape[0] != self.num_frames or np.asarray(c).ndim != 4:
                raise ValueError(
                    f"clip #{i}: the classifier takes {self.num_frames} RGB frames (T, H, W, 3), "
                    f"got shape {np.asarray(c).shape}"
                )
        if not clips:
            return []
        inputs = self.processor([list(np.asarray(c)) for c in clips], return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(pixel_values=inputs["pixel_values"].to(self.device)).logits
        probs = logits.float().softmax(-1).cpu().numpy()
        return [(self.labels[int(p.argmax())], float(p.max())) for p in probs]
