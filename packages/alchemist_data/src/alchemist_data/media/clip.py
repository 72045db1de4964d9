"""Clip decoding: a time window resampled to a frame rate (training targets), and full decodes."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from alchemist_data.media.probe import (
    VideoError,
    _clip_window,
    _display_rotation,
    _iter_frames,
    _open,
    _probe_open,
    _seek,
    _stream_times,
    _StreamTimes,
    _to_rgb,
    _video_stream,
)


def decode_all_frames(video: str, *, threads: int = 1) -> Iterator[np.ndarray]:
    """Every frame of the video as RGB uint8 HxWx3 (display orientation): the naive baseline of the bench."""
    video = os.fspath(video)
    with _open(video) as container:
        vs = _video_stream(container, video, threads)
        rotation = None
        for frame in _iter_frames(container, vs):
            if rotation is None:
                rotation = _display_rotation(frame, vs)
            yield _to_rgb(frame, rotation)


def _cover_crop_size(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> tuple[int, int]:
    """Smallest size with the source aspect ratio that covers ``dst_wh`` (then center-cropped)."""
    sw, sh = src_wh
    dw, dh = dst_wh
    scale = max(dw / sw, dh / sh)
    return max(dw, math.ceil(sw * scale - 1e-6)), max(dh, math.ceil(sh * scale - 1e-6))


def _decode_range(container: Any, vs: Any, times: _StreamTimes, a_ts: int, last_ts: int) -> list[Any]:
    """Frames from the last one at or before ``a_ts`` through the first one after ``last_ts`` (display order)."""
    back = 0
    frames: list[Any] = []
    for _ in range(10):
        seek_ts = max(a_ts - back, times.start_pts)
        _seek(container, vs, seek_ts, times)
        frames = []
        first_pts = None
        for frame in _iter_frames(container, vs):
            if frame.pts is None:
                continue
            first_pts = frame.pts if first_pts is None else first_pts
            if frame.pts <= a_ts:
                frames = [frame]  # only the latest frame at or before the start can be the nearest one
            else:
                frames.append(frame)
            if frame.pts > last_ts:
                break
        if seek_ts <= times.start_pts or (first_pts is not None and first_pts <= a_ts):
            return frames
        # The seek landed after the start (the index may hold dts) or on a non-keyframe (MPEG-TS seeks by
        # timestamp, not by keyframe, and the decoder drops frames until the next keyframe): go further back.
        back = max(int(1 / times.tb), back * 2)
    return frames


def decode_clip(
    video: str,
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float = 24.0,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    *,
    threads: int = 1,
) -> np.ndarray:
    """The clip [start_s, end_s) resampled to ``fps`` by nearest pts, as uint8 [T, H, W, 3] in display orientation.

    Frame k is the source frame whose pts is nearest to ``start_s + k / fps``. ``num_frames`` fixes T (times past the
    clip's end repeat its last frame); otherwise T = floor(duration * fps), at least 1. ``size=(w, h)`` resizes
    keeping the aspect ratio so the frame covers (w, h), then center-crops to exactly (w, h).
    """
    video = os.fspath(video)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (width, height) with positive values, got {size}")
    with _open(video) as container:
        vs = _video_stream(container, video, threads)
        info = _probe_open(container, vs, video)
        a, b = _clip_window(info, start_s, end_s, video)
        times = _stream_times(container, vs)
        tb = times.tb
        count = num_frames if num_frames is not None else max(1, int(math.floor((b - a) * fps + 1e-6)))
        want_s = [a + k / fps for k in range(count)]
        want_s = [min(t, b) for t in want_s]
        a_ts = times.start_pts + int(math.floor(a / tb + 1e-6))
        want_ts = [times.start_pts + t / tb for t in want_s]
        frames = _decode_range(container, vs, times, a_ts, int(math.ceil(want_ts[-1])))
        if not frames:
            raise VideoError("unreadable", f"{video}: no frame of the clip [{a:.3f}, {b:.3f}) s could be decoded")
        end_ts = times.start_pts + b / tb  # the clip's end is exclusive
        frames = [f for f in frames if f.pts < end_ts] or frames[:1]
        pts = np.array([f.pts for f in frames], dtype=np.int64)
        out_frames = []
        rotation = info.rotation_deg
        scaled = None
        if size is not None:
            disp = (frames[0].width, frames[0].height)
            if rotation in (90, 270):
                disp = disp[::-1]
            cw, ch = _cover_crop_size(disp, size)
            scaled = (cw, ch) if rotation not in (90, 270) else (ch, cw)
        cache: dict[int, np.ndarray] = {}
        for t in want_ts:
            i = int(np.argmin(np.abs(pts - t)))
            if i not in cache:
                arr = _to_rgb(frames[i], rotation, scaled_wh=scaled)
                if size is not None:
                    w, h = size
                    y0 = (arr.shape[0] - h) // 2
                    x0 = (arr.shape[1] - w) // 2
                    arr = np.ascontiguousarray(arr[y0 : y0 + h, x0 : x0 + w])
                cache[i] = arr
            out_frames.append(cache[i])
        return np.stack(out_frames)


# --------------------------------------------------------------------------------------------------------------
# writing
