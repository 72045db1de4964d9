"""What the benchmark reads, with the official protocol's semantics.

* Generated videos are read like ``evaluation_protocol/utils/video/video_decoder.py``: PyAV, frame rate =
  ``stream.guessed_rate``, only the first ``num_frames`` frames (indices 0..num_frames-1), in coded orientation.
* Benchmark clips are cut like ``msrvtt_personalization/prepare_msrvtt_personalization_data.py``: the source frames
  between the annotated timestamps, resized to the annotated resolution, H.264 (:func:`write_video`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alchemist_data.media.probe import VideoError, _iter_frames, _open, _video_stream
from alchemist_data.media.write import write_video


@dataclass
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float
    num_frames_in_file: int | None  # as declared by the container (may be 0/None when unknown)


def read_first_frames(path: str | os.PathLike, num_frames: int | None) -> DecodedVideo:
    """Decode the first ``num_frames`` frames (all when None) of a video (a path or a URI).

    A file with fewer frames than asked yields the frames it has (the official decoder raises instead, see
    docs/eval.md); a file with no decodable frame raises ``VideoError`` (reason ``no_frames``).
    """
    video = os.fspath(path)
    frames: list[np.ndarray] = []
    with _open(video) as container:
        # One decoding thread (the default of _video_stream): a scorer decodes one short video at a time, one worker
        # per core; FFmpeg's automatic threads (cores + 1 per open) made decoding 4x slower on 2 busy cores.
        stream = _video_stream(container, video)
        fps = float(stream.guessed_rate or stream.average_rate or 0.0) or 0.0
        declared = int(stream.frames or 0) or None
        for frame in _iter_frames(container, stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if num_frames is not None and len(frames) >= num_frames:
                break
    if not frames:
        raise VideoError("no_frames", f"{video} has no decodable video frame")
    return DecodedVideo(frames=np.stack(frames), fps=fps if fps > 0 else 24.0, num_frames_in_file=declared)


def _resize(frame: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    import cv2

    w, h = size_wh
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    shrink = w * h < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def cut_clip(
    source: str | os.PathLike, out_path: str | Path, start_s: float, end_s: float,
    resolution_wh: tuple[int, int] | None,
) -> tuple[np.ndarray, float]:
    """Cut [start_s, end_s) of ``source`` into ``out_path`` (H.264), resized to ``resolution_wh`` (even sizes).

    Returns the frames of the *written* clip [T, H, W, 3] and its fps: the official preparation takes frame1/2/3
    from the re-encoded mp4 (moviepy, libx264 defaults), so the ground truth carries that one H.264 round trip too.
    """
    video = os.fspath(source)
    if end_s <= start_s:
        raise ValueError(f"bad time range [{start_s}, {end_s}] for {video}: end must be after start")
    frames: list[np.ndarray] = []
    with _open(video) as container:
        stream = _video_stream(container, video)
        fps = float(stream.guessed_rate or stream.average_rate or 24.0)
        for frame in _iter_frames(container, stream):
            t = frame.time if frame.time is not None else len(frames) / fps
            if t < start_s - 1e-6:
                continue
            if t >= end_s - 1e-6:
                break
            arr = frame.to_ndarray(format="rgb24")
            if resolution_wh is not None:
                arr = _resize(arr, (int(resolution_wh[0]), int(resolution_wh[1])))
            frames.append(arr)
    if not frames:
        raise VideoError("no_frames", f"{video} has no frame in [{start_s:.3f}, {end_s:.3f}] s")
    clip = np.stack(frames)
    # written under a temporary name, then renamed: an interrupted preparation never leaves a truncated clip behind
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp" + (out_path.suffix or ".mp4"))
    write_video(tmp, clip, fps, crf=23, preset="medium")  # x264's defaults, which moviepy's export uses
    tmp.replace(out_path)
    return read_first_frames(out_path, None).frames, fps


def frame_at_time(frames: np.ndarray, fps: float, t: float) -> np.ndarray:
    """The frame shown at time ``t`` of a decoded clip (moviepy ``get_frame``: index int(fps * t + 1e-5))."""
    idx = min(max(int(fps * t + 0.00001), 0), len(frames) - 1)
    return frames[idx]
