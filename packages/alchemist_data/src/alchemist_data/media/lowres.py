"""Every frame of a video at thumbnail size: TransNetV2's input for shot detection (48x27 RGB, issue 8).

Two backends, both returning frames in display orientation (rotation metadata applied) and timestamps in the media
layer's convention (seconds from the first frame, from each frame's pts):

* ``pyav``: threaded FFmpeg decode (``thread_type=AUTO``), each frame scaled by swscale with one context kept for the
  whole video. The scaler is bicubic because TransNetV2's own ``predict_video`` gets its frames from the ffmpeg CLI
  with ``-s 48x27``, whose scaler defaults to bicubic; so this backend feeds the model what it was made for.
* ``decord``: decord 0.6.0 decodes and scales inside its own FFmpeg (bilinear), at 4/3 of the target size (64x36 for
  48x27: decord breaks at a width of 48, see :func:`_decord_reader`), then ``cv2.INTER_AREA`` down to the target.

``backend="auto"`` is ``pyav``: it does less work and it is the faithful one. Measured by ``bench/data_frames.py``
(``make bench``, rows ``data/lowres_decode``) on a 240-frame 1280x720 H.264 clip (30 fps, x264 veryfast CRF 23 with
grain, 3 B-frames) on 2 cores shared with other jobs (load average 5-14), three runs:

* CPU ms per frame with one decoding thread (decoding alone / ``pyav`` / ``decord`` / PyAV's per-frame
  ``frame.to_ndarray(width=48, height=27)``, which builds a new swscale context every frame): 2.60 / 3.32 / 3.80 /
  3.78, 2.57 / 2.99 / 3.37 / 3.21, 3.44 / 4.23 / 4.49 / 4.91. ``pyav`` needs 6-15 % less CPU than ``decord`` in
  every run.
* Against ``ffmpeg -i CLIP -f rawvideo -pix_fmt rgb24 -s 48x27`` (TransNetV2's ``predict_video``): ``pyav`` is 0.09
  grey levels mean absolute difference away (the swscale of PyAV's FFmpeg build is not the system ffmpeg's),
  ``decord`` 5.0.
* Wall frames/s with FFmpeg's threads swung by up to 2x between repeats under that load (median of 5, decoding alone
  / ``pyav`` / ``decord``: 158 / 157 / 149, 278 / 161 / 177, 169 / 137 / 92; best of 12: 240 / 208 / 209), so they
  decide nothing here; ``make bench`` records them per run.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from alchemist_data.media.probe import (
    VideoError,
    _display_rotation,
    _iter_frames,
    _locate,
    _open,
    _reformatter,
    _stream_times,
    _video_stream,
    probe,
)

LOWRES_BACKENDS = ("auto", "pyav", "decord")
_AUTO_BACKEND = "pyav"
# decord decodes this many frames per get_batch call: the intermediate frames of a whole long video would not fit
# in memory, and contiguous batches cost no extra seek.
_DECORD_BATCH = 256


def decode_all_frames_lowres(
    video: str | os.PathLike,
    width: int = 48,
    height: int = 27,
    backend: str = "auto",
    *,
    threads: int = 0,
    stop_s: float | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Every frame of ``video`` (a path or a URI) as uint8 RGB ``(N, height, width, 3)``, display orientation.

    ``stop_s``: only the frames that start before this time (seconds from the first frame); decoding stops there,
    so a clip window near a long video's start does not decode the rest of it.

    Returns ``(frames, fps, timestamps_s)``: fps as :func:`probe` reports it, and each frame's presentation time in
    seconds from the first frame (increasing; irregular for variable-frame-rate video). ``threads`` is the number of
    decoding threads (0: FFmpeg's choice, one per core). A video that cannot be decoded raises :class:`VideoError`.
    """
    video = os.fspath(video)
    if backend not in LOWRES_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, LOWRES_BACKENDS))}, got {backend!r}")
    if (
        isinstance(width, bool)
        or isinstance(height, bool)
        or int(width) != width
        or int(height) != height
        or width < 1
        or height < 1
    ):
        raise ValueError(f"width and height must be positive integers (pixels), got {width!r} x {height!r}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = one per core), got {threads}")
    if backend == "auto":
        backend = _AUTO_BACKEND
    decode = _lowres_decord if backend == "decord" else _lowres_pyav
    return decode(video, int(width), int(height), threads, stop_s)


def _lowres_pyav(
    video: str, width: int, height: int, threads: int, stop_s: float | None
) -> tuple[np.ndarray, float, np.ndarray]:
    frames: list[np.ndarray] = []
    pts: list[int] = []
    with _open(video) as container:
        vs = _video_stream(container, video, threads)
        times = _stream_times(container, vs)
        step = int(times.frame_ticks)
        reformatter = _reformatter()
        rotation = None
        coded_wh = (width, height)
        # Decoded frames come in presentation order, so the first one at or past stop_s ends the decode.
        stop_pts = None if stop_s is None else times.start_pts + stop_s / float(times.tb)
        for frame in _iter_frames(container, vs):
            if stop_pts is not None and frame.pts is not None and frame.pts >= stop_pts:
                break
            if rotation is None:
                rotation = _display_rotation(frame, vs)
                if rotation in (90, 270):  # scale the coded picture to the rotated size, then rotate it upright
                    coded_wh = (height, width)
            small = reformatter.reformat(
                frame, width=coded_wh[0], height=coded_wh[1], format="rgb24", interpolation="BICUBIC"
            ).to_ndarray()
            frames.append(np.rot90(small, k=rotation // 90) if rotation else small)
            # A frame without pts (some raw streams) is placed one nominal frame after the previous one.
            pts.append(frame.pts if frame.pts is not None else (pts[-1] + step if pts else times.start_pts))
    if not frames:
        raise VideoError("no_frames", f"{video}: no frame of the video stream could be decoded")
    timestamps = (np.asarray(pts, dtype=np.float64) - times.start_pts) * float(times.tb)
    return np.stack(frames), float(times.fps), timestamps


def _lowres_decord(
    video: str, width: int, height: int, threads: int, stop_s: float | None
) -> tuple[np.ndarray, float, np.ndarray]:
    try:
        import decord
    except ImportError as exc:
        raise ValueError(
            "backend='decord' needs the decord package (requirements/base.txt pins decord==0.6.0); use backend='pyav'"
        ) from exc
    import cv2

    # The PyAV probe rejects missing, empty and unreadable files with the same reasons as the pyav backend, and gives
    # the fps of the media layer's definition.
    info = probe(video)
    loc = _locate(video)
    if loc.is_local:

        def source() -> Any:
            return loc.path
    else:
        with loc.fs.open_input_file(loc.path) as f:  # decord reads a file object whole anyway
            data = f.read()

        def source() -> Any:
            return io.BytesIO(data)

    try:
        reader = _decord_reader(decord, source, width, height, threads, video)
        n = len(reader)
        timestamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)[:, 0]
        # decord 0.6.0 already counts from the first frame (as the media layer does); kept explicit for other versions.
        timestamps = timestamps - (timestamps[0] if n else 0.0)
        if stop_s is not None:
            n = int(np.searchsorted(timestamps, stop_s, side="left"))
            timestamps = timestamps[:n]
        frames = np.empty((n, height, width, 3), dtype=np.uint8)
        for start in range(0, n, _DECORD_BATCH):
            batch = reader.get_batch(list(range(start, min(n, start + _DECORD_BATCH)))).asnumpy()
            for i, arr in enumerate(batch):
                frames[start + i] = cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA)
    # decord reports bad data as DECORDError, an unopenable file as RuntimeError, a file without frames by an assert.
    except (decord.DECORDError, RuntimeError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VideoError("unreadable", f"{video}: decord could not decode it ({first})") from exc
    return frames, float(info.fps), timestamps


def _decord_reader(decord: Any, source: Callable[[], Any], width: int, height: int, threads: int, video: str) -> Any:
    """A decord reader that scales to 4/3 of ``width`` x ``height``, at a size decord can deliver.

    decord 0.6.0 fails at some output widths (8, 12, 16, 24, 48 and 72 px were measured: ``Check failed: from_size
    == to_size``, or 4-channel frames); its width/height are in display orientation. A size that fails on the first
    frame is replaced by the next even width.
    """
    w, h = math.ceil(width * 4 / 3), math.ceil(height * 4 / 3)
    for _ in range(8):
        reader = decord.VideoReader(source(), width=w, height=h, num_threads=threads)
        try:
            ok = tuple(reader.get_batch([0]).shape) == (1, h, w, 3)
        except decord.DECORDError as exc:
            if "from_size" not in str(exc):
                raise
            ok = False
        if ok:
            reader.seek(0)
            return reader
        w += 2 - w % 2
    raise VideoError("unreadable", f"{video}: decord delivers no frame near {width}x{height}; use backend='pyav'")
