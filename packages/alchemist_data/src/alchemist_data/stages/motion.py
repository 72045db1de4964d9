"""The motion pre-filter: reject still and barely moving clips (paper Appendix A.1, undesirable classes 1-2).

Optical flow (OpenCV DIS, or RAFT in ``paper``) on ``num_pairs`` frame pairs spread over the clip, each pair
``round(fps / 8)`` frames apart (the benchmark's Dync-D sampling interval, so slow motion rises above flow noise).
The scores (``alchemist_data.models.motion``) land in the clips table; a clip whose score is below
``static_threshold`` is ``static_video``, below ``slight_threshold`` ``slight_motion``. With ``compensate_camera``
the thresholds apply to the foreground score (camera pan/zoom/rotation removed), so a still image under a pan or
zoom counts as static. An optional VideoMAE classifier (``videomae_model``) adds the paper's learned filter: a clip
whose most likely class is undesirable (with probability >= ``videomae_threshold``) is ``undesirable_<class>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from alchemist_data.config import StageConfig
from alchemist_data.stages.base import RowReject, Stage, columns


@dataclass(kw_only=True)
class MotionConfig(StageConfig):
    backend: str = "dis"  # dis (OpenCV) | raft (torchvision raft_large, raft_checkpoint) | off
    num_pairs: int = 4  # frame pairs spread over the clip
    max_side_px: int = 256  # frames are downsized to this longer side for the flow (scores are resolution-free)
    compensate_camera: bool = True  # thresholds on the foreground score (camera motion removed)
    # In frame diagonals per frame, measured with DIS on generated clips (README, Motion pre-filter): a still 3e-5,
    # stills panned at 0.3-5 px/frame or zoomed 0.4 %/frame 0.6e-4 to 2.2e-4, a still zoomed 1 %/frame 4.4e-4, a
    # small disc crossing a still at 0.5 / 1 px/frame 5e-4 / 1e-3, the sample corpus's clips 1e-3 to 1.3e-2.
    static_threshold: float = 3e-4
    slight_threshold: float = 6e-4
    raft_checkpoint: str = ""  # raft: torchvision raft_large state dict (raft-things)
    raft_iters: int = 20
    videomae_model: str = ""  # a VideoMAEForVideoClassification directory or hub id; empty = no classifier
    videomae_threshold: float = 0.5
    batch_size: int = 8
    choices = {"motion.backend": ("dis", "raft", "off")}

    def validate(self) -> None:
        super().validate()
        if self.num_pairs < 1:
            raise ValueError(f"motion.num_pairs must be at least 1, got {self.num_pairs}")
        if not 0 <= self.static_threshold <= self.slight_threshold:
            raise ValueError(
                f"motion thresholds must satisfy 0 <= static_threshold <= slight_threshold, got "
                f"{self.static_threshold} and {self.slight_threshold}"
            )
        if not 0.0 < self.videomae_threshold <= 1.0:
            raise ValueError(f"motion.videomae_threshold must lie in (0, 1], got {self.videomae_threshold}")

    @property
    def enabled(self) -> bool:
        return self.backend != "off" or bool(self.videomae_model)


class MotionStage(Stage):
    """Optical-flow motion scores and the optional VideoMAE undesirable-video classifier."""

    adds = columns(
        {
            "motion_score": pa.float32(),
            "foreground_motion_score": pa.float32(),
            "video_class": pa.string(),
            "video_class_score": pa.float32(),
        }
    )

    def setup(self) -> None:
        from alchemist_data.models.motion import MotionMeter, VideoClassifier

        cfg = self.cfg
        self.meter = (
            None
            if cfg.backend == "off"
            else MotionMeter(cfg.backend, self.model_device, cfg.raft_checkpoint, cfg.raft_iters)
        )
        self.classifier = VideoClassifier(cfg.videomae_model, self.model_device) if cfg.videomae_model else None
        for model in (self.meter, self.classifier):
            if model is not None:
                model.setup()

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        if not self.cfg.enabled:  # the pipeline leaves it out then; kept for a direct call
            return
        if self.meter is None:
            for row in rows:
                self._guard(row, self._classify)
            return
        pairs: dict[int, tuple[list, list, list]] = {}
        for row in rows:
            self._guard(row, lambda r: pairs.__setitem__(id(r), _pair_frames(r, self.cfg)))
        ok = [r for r in rows if id(r) in pairs]
        if ok:
            self._batched(ok, lambda rs: self._measure_all([pairs[id(r)] for r in rs]), self._apply)

    def process_row(self, row: dict[str, Any]) -> None:
        """One clip on its own (the fallback when a batched flow call fails)."""
        if self.meter is not None:
            self._apply(row, self._measure_all([_pair_frames(row, self.cfg)])[0])
        else:
            self._classify(row)

    def _measure_all(self, clips: list[tuple[list, list, list]]) -> list[list[tuple[float, float]]]:
        """One flow call over the pairs of every clip (pairs of one size at a time), cut back per clip."""
        out: list[list[tuple[float, float]]] = [[] for _ in clips]
        by_size: dict[tuple[int, ...], list[tuple[int, np.ndarray, np.ndarray, float]]] = {}
        for k, (firsts, seconds, gaps) in enumerate(clips):
            for a, b, g in zip(firsts, seconds, gaps, strict=True):
                by_size.setdefault(a.shape, []).append((k, a, b, g))
        for items in by_size.values():
            scores = self.meter.measure([i[1] for i in items], [i[2] for i in items], [i[3] for i in items])
            for (k, *_), s in zip(items, scores, strict=True):
                out[k].append(s)
        return out

    def _apply(self, row: dict[str, Any], scores: list[tuple[float, float]]) -> None:
        cfg = self.cfg
        motion = float(np.mean([s[0] for s in scores]))
        foreground = float(np.mean([s[1] for s in scores]))
        row.update(motion_score=motion, foreground_motion_score=foreground)
        score, what = (
            (foreground, "foreground motion (camera pan/zoom removed)")
            if cfg.compensate_camera
            else (motion, "motion")
        )
        measured = (
            f"{what} {score:.2e} frame diagonals per frame (total motion {motion:.2e}, {len(scores)} flow "
            f"pairs, {cfg.backend})"
        )
        if score < cfg.static_threshold:
            raise RowReject("static_video", f"{measured} < motion.static_threshold={cfg.static_threshold}")
        if score < cfg.slight_threshold:
            raise RowReject("slight_motion", f"{measured} < motion.slight_threshold={cfg.slight_threshold}")
        if self.classifier is not None:
            self._classify(row)

    def _classify(self, row: dict[str, Any]) -> None:
        from alchemist_data.media import decode_clip

        start, end = row["start_s"], row["end_s"]
        clf = self.classifier
        if start is None or end is None:
            from alchemist_data.media.probe import _clip_window, probe

            start, end = _clip_window(probe(row["video"]), start, end, row["video"])
        n = clf.num_frames
        frames = decode_clip(row["video"], start, end, fps=n / (end - start), num_frames=n, size=clf.crop_size)
        label, p = clf.classify([frames])[0]
        row.update(video_class=label, video_class_score=p)
        if label != "ok" and p >= self.cfg.videomae_threshold:
            raise RowReject(
                f"undesirable_{label}",
                f"VideoMAE classifier {self.cfg.videomae_model!r}: {label} with "
                f"probability {p:.3f} >= motion.videomae_threshold={self.cfg.videomae_threshold}",
            )


def _pair_frames(row: dict[str, Any], cfg: MotionConfig) -> tuple[list, list, list]:
    """(first frames, second frames, frames apart) of ``cfg.num_pairs`` pairs spread over the clip window."""
    from alchemist_data.media import reference_frames
    from alchemist_data.media.probe import _clip_window, probe

    video = row["video"]
    info = probe(video)
    a, b = _clip_window(info, row["start_s"], row["end_s"], video)
    fps = info.fps if info.fps and info.fps > 0 else 25.0
    gap_s = min(max(1, round(fps / 8)) / fps, (b - a) / 2)
    span = b - a - gap_s
    starts = [a + (k + 0.5) / cfg.num_pairs * span for k in range(cfg.num_pairs)]
    fractions = [f for t in starts for f in ((t - a) / (b - a), (t + gap_s - a) / (b - a))]
    _, times, frames = reference_frames(video, a, b, fractions=fractions, max_side_px=cfg.max_side_px)
    firsts, seconds, gaps = [], [], []
    for i in range(0, len(frames), 2):
        if times[i + 1] > times[i]:
            firsts.append(frames[i])
            seconds.append(frames[i + 1])
            gaps.append((times[i + 1] - times[i]) * fps)
    if not firsts:
        raise RowReject(
            "too_few_frames",
            f"{video}: the clip [{a:.3f}, {b:.3f}) s has no two distinct frames to measure motion between",
        )
    return firsts, seconds, gaps
