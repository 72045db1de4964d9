"""What the benchmark reads, with the official protocol's semantics (docs/eval.md §1, §2, §5).

* Generated videos are read like ``evaluation_protocol/utils/video/video_decoder.py`` (``decode_frames_at_indexes``
  over ``range(num_frames)``): frame ``i`` is the frame at time ``i / fps``, fps = ``stream.guessed_rate``, coded
  orientation (PyAV's ``to_image``). See :func:`read_frames_at_rate`.
* Benchmark clips are cut like ``msrvtt_personalization/prepare_msrvtt_personalization_data.py`` (moviepy
  ``subclip`` + ``resize`` + ``write_videofile``) and their frame1/2/3 taken with moviepy's ``get_frame(t)``: the frame
  on screen at ``t``. See :func:`cut_clip` and :func:`frame_at_time`.

Times are the media layer's: seconds from the video's first frame, from each frame's pts (never ``index / fps``, which
differs for variable-frame-rate video and for streams whose first pts is not 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alchemist_data.media.probe import (
    VideoError,
    _display_rotation,
    _iter_frames,
    _open,
    _stream_times,
    _to_rgb,
    _video_stream,
)
from alchemist_data.media.write import write_video

# moviepy's get_frame(t) reads frame int(fps * t + 1e-5): this many frame periods of slack at each frame's start.
_MOVIEPY_EPS_FRAMES = 1e-5
# The official decoder accepts a frame within half a frame period of the target, plus 1 ms for rounded timestamps.
_OFFICIAL_SLACK_S = 0.001


@dataclass
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float
    times_s: np.ndarray  # [T] float64: each returned frame's own time, seconds from the video's first frame
    num_frames_in_file: int | None  # as declared by the container (may be 0/None when unknown)


def _timed_frames(container: Any, vs: Any) -> Iterator[tuple[float, Any]]:
    """(time from the first frame, frame) in presentation order; a frame without pts follows the previous one."""
    times = _stream_times(container, vs)
    step = 1 / (times.fps or 25)
    last = None
    for frame in _iter_frames(container, vs):
        t = (
            float((frame.pts - times.start_pts) * times.tb)
            if frame.pts is not None
            else (0.0 if last is None else last + step)
        )
        last = t
        yield t, frame


def _fps(vs: Any) -> float:
    rate = vs.guessed_rate or vs.average_rate
    return float(rate) if rate else 24.0


def read_frames_at_rate(path: str | os.PathLike, num_frames: int | None) -> DecodedVideo:
    """The frames at times ``i / fps`` for ``i < num_frames`` of a video (a path or a URI); every frame when None.

    The official decoder's rule, target by target (in time order): the previous pick again if it is within half a frame
    period (+1 ms) of the target, else the first later frame that is. Constant-rate video starting at pts 0 gives its
    first ``num_frames`` frames. Where the official decoder raises, this reader goes on (docs/eval.md §5): a target in
    a gap of a variable-frame-rate video takes the frame on screen then; a target past the last frame's display
    interval ends the read, so a short video yields the frames it has. No decodable frame raises ``VideoError``
    (reason ``no_frames``).
    """
    video = os.fspath(path)
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 (or None for every frame), got {num_frames}")
    picked: list[tuple[float, Any]] = []
    with _open(video) as container:
        # One decoding thread (the default of _video_stream): a scorer decodes one short video at a time, one worker
        # per core; FFmpeg's automatic threads (cores + 1 per open) made decoding 4x slower on 2 busy cores.
        vs = _video_stream(container, video)
        fps = _fps(vs)
        declared = int(vs.frames or 0) or None
        frames = _timed_frames(container, vs)
        if num_frames is None:
            picked = list(frames)
        else:
            picked = _pick_at_rate(frames, [i / fps for i in range(num_frames)], fps)
        arrays = _arrays(picked, rotation=0)
    if not picked:
        raise VideoError("no_frames", f"{video} has no decodable video frame")
    return DecodedVideo(frames=arrays, fps=fps, times_s=np.array([t for t, _ in picked]), num_frames_in_file=declared)


def _pick_at_rate(
    frames: Iterator[tuple[float, Any]], targets: Sequence[float], fps: float
) -> list[tuple[float, Any]]:
    tol = 0.5 / fps + _OFFICIAL_SLACK_S
    picked: list[tuple[float, Any]] = []
    prev: tuple[float, Any] | None = None  # the last decoded frame
    k = 0
    for t, frame in frames:
        while k < len(targets):
            target = targets[k]
            if picked and abs(picked[-1][0] - target) <= tol:
                picked.append(picked[-1])  # the official decoder recycles its last frame for a target this close
            elif abs(t - target) <= tol:
                picked.append((t, frame))
            elif t > target:  # no frame near the target (a gap): the one on screen then, or the first frame
                picked.append(prev if prev is not None else (t, frame))
            else:
                break  # this frame is before the target's window
            k += 1
        if k == len(targets):
            break
        prev = (t, frame)
    if prev is not None and k < len(targets):  # the data ended: the last frame serves its own display interval
        for target in targets[k:]:
            if not (abs(prev[0] - target) <= tol or target < prev[0] + 1 / fps - 1e-6):
                break
            picked.append(prev)
    return picked


def _arrays(picked: Sequence[tuple[float, Any]], rotation: int, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """RGB arrays of the picked frames, each distinct frame converted (and resized) once."""
    cache: dict[int, np.ndarray] = {}
    out = []
    for _, frame in picked:
        key = id(frame)
        if key not in cache:
            arr = _to_rgb(frame, rotation)
            cache[key] = arr if size_wh is None else moviepy_resize(arr, size_wh)
        out.append(cache[key])
    return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def moviepy_resize(frame: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """moviepy's ``resize`` (OpenCV resizer): linear interpolation when either side grows, area otherwise."""
    import cv2

    w, h = int(size_wh[0]), int(size_wh[1])
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    grows = w > frame.shape[1] or h > frame.shape[0]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR if grows else cv2.INTER_AREA)


def cut_clip(
    source: str | os.PathLike,
    out_path: str | Path,
    start_s: float,
    end_s: float,
    resolution_wh: tuple[int, int] | None,
) -> DecodedVideo:
    """Cut [start_s, end_s) of ``source`` into ``out_path`` (H.264), resized to ``resolution_wh``, as moviepy does.

    The clip's frame ``k`` is the source frame on screen at ``start_s + k / fps`` (moviepy's ``get_frame``), for
    ``k / fps`` in ``numpy.arange(0, end_s - start_s, 1 / fps)`` (moviepy's ``iter_frames``), fps = the source's
    ``guessed_rate``; times past the source's last frame repeat it, as moviepy's reader does. Frames are in display
    orientation (moviepy reads through the ffmpeg CLI, which applies rotation metadata).

    Returns the *written* clip, decoded: the official preparation takes frame1/2/3 from the re-encoded mp4 (libx264
    defaults), so the ground truth carries that one H.264 round trip too.
    """
    video = os.fspath(source)
    if end_s <= start_s:
        raise ValueError(f"bad time range [{start_s}, {end_s}] for {video}: end must be after start")
    with _open(video) as container:
        vs = _video_stream(container, video)
        fps = _fps(vs)
        targets = [start_s + t for t in np.arange(0, end_s - start_s, 1.0 / fps)]
        picked: list[tuple[float, Any]] = []
        rotation = None
        for t, frame in _on_screen(_timed_frames(container, vs), targets, _MOVIEPY_EPS_FRAMES / fps):
            if rotation is None:
                rotation = _display_rotation(frame, vs)
            picked.append((t, frame))
        if not picked:
            raise VideoError("no_frames", f"{video} has no decodable video frame")
        size = None if resolution_wh is None else (int(resolution_wh[0]), int(resolution_wh[1]))
        clip = _arrays(picked, rotation or 0, size)
    # written under a temporary name, then renamed: an interrupted preparation never leaves a truncated clip behind
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp" + (out_path.suffix or ".mp4"))
    write_video(tmp, clip, fps, crf=23, preset="medium")  # x264's defaults, which moviepy's export uses
    tmp.replace(out_path)
    return read_frames_at_rate(out_path, None)


def _on_screen(
    frames: Iterator[tuple[float, Any]], targets: Sequence[float], eps: float
) -> Iterator[tuple[float, Any]]:
    """Per target (ascending): the last frame whose time is <= target + eps; the first frame for targets before it and
    the last one for targets after the data ends."""
    prev: tuple[float, Any] | None = None
    k = 0
    for t, frame in frames:
        while k < len(targets) and t > targets[k] + eps:
            yield prev if prev is not None else (t, frame)
            k += 1
        if k == len(targets):
            return
        prev = (t, frame)
    if prev is not None:
        for _ in targets[k:]:
            yield prev


def frame_at_time(clip: DecodedVideo, t: float) -> np.ndarray:
    """The frame on screen at time ``t`` of a decoded clip: moviepy's ``get_frame`` (for constant-rate video from
    pts 0 that is frame ``int(fps * t + 1e-5)``), the first frame before it starts, the last one after it ends."""
    i = int(np.searchsorted(clip.times_s, t + _MOVIEPY_EPS_FRAMES / clip.fps, side="right")) - 1
    return clip.frames[min(max(i, 0), len(clip.frames) - 1)]
