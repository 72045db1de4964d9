"""Opening, probing and the PyAV primitives every reader of the media layer builds on.

Time convention used everywhere in :mod:`alchemist_data.media`: seconds from the start of the video, i.e. the first
frame of the video stream is at 0 whatever its container pts (``VideoInfo.start_time_s`` reports that offset; MPEG-TS
and cut MKV files often start at 1.4 s or more). This is what players show and what ``ffmpeg -ss`` means, so
``start_s``/``end_s`` of a manifest and the returned reference times can be handed to ``decode_clip`` or to ``ffmpeg``
unchanged. Times come from each frame's pts and the stream's time_base, never from ``frame_index / fps``, which is
wrong for variable-frame-rate video.

Videos are local paths or URIs of any filesystem :func:`alchemist_data.storage.resolve` understands (``s3://``,
``gs://``, ``file://``); remote files are read through a random-access pyarrow file, so PyAV can seek.

Bad input raises :class:`VideoError` whose ``reason`` is a stable code the curation stage writes to ``rejects`` and
the benchmark scorer to its ``status`` column: ``missing_file``, ``empty_file``, ``unreadable``, ``no_video_stream``,
``no_frames`` (nothing decodable where frames were asked for), ``too_few_frames`` (fewer than 3 distinct frames in
the clip: the paper needs three distinct reference times), ``bad_time_range`` and ``truncated`` (the file opens but
its data ends before a needed frame).

This module and :mod:`alchemist_data.media.write` are the only ones that import PyAV.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from pyarrow import fs as pafs

from alchemist_data import storage


class VideoError(Exception):
    """A video that cannot be used. ``reason`` is a machine-readable code, ``detail`` a human explanation."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep reason/detail when the error crosses a process boundary (Ray workers)
        return (type(self), (self.reason, self.detail))


@dataclass
class VideoInfo:
    duration_s: float
    fps: float
    width_px: int  # display size: after rotation metadata is applied
    height_px: int
    num_frames: int  # from the container when it says, else estimated as round(duration * fps)
    rotation_deg: int  # counter-clockwise rotation applied to decoded frames for display (0, 90, 180, 270)
    codec: str
    pix_fmt: str
    start_time_s: float  # container pts of the first frame in seconds; every time in this module is relative to it
    is_num_frames_estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------------
# opening


def _locate(video: str) -> storage.Location:
    """The video's location once it is known to be a non-empty file (``VideoError`` otherwise)."""
    if not video:
        raise VideoError("missing_file", "the video path is empty; give a file path or a URI in the manifest")
    try:
        loc = storage.resolve(video)
        info = loc.info()
    except storage.StorageError as exc:  # unknown scheme, bad bucket, no credentials, unreachable store ...
        raise VideoError("missing_file", str(exc)) from exc
    if info.type == pafs.FileType.NotFound:
        raise VideoError("missing_file", f"{video} does not exist")
    if info.type != pafs.FileType.File:
        raise VideoError("missing_file", f"{video} is not a file")
    if info.size == 0:
        raise VideoError("empty_file", f"{video} has zero bytes")
    return loc


@contextlib.contextmanager
def _open(video: str | os.PathLike) -> Iterator[Any]:
    """Open ``video`` (a local path or a URI, see :func:`alchemist_data.storage.resolve`) as a PyAV container."""
    import av

    video = os.fspath(video)
    loc = _locate(video)
    # Local files are opened by name (FFmpeg's own I/O); remote ones through a random-access pyarrow file.
    handle = None if loc.is_local else loc.fs.open_input_file(loc.path)
    source: Any = loc.path if handle is None else handle
    try:
        try:
            container = av.open(source, mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise VideoError("unreadable", f"{video} is not a readable video container ({exc})") from exc
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise VideoError("unreadable", f"{video} could not be opened ({exc})") from exc
        try:
            yield container
        except av.FFmpegError as exc:
            # Anything FFmpeg refuses past opening (damaged data, unsupported pixel format) rejects this video
            # with a reason instead of surfacing as an unknown error.
            raise VideoError("unreadable", f"{video}: decoding failed ({exc})") from exc
        finally:
            container.close()
    finally:
        if handle is not None:
            handle.close()


def _video_stream(container: Any, video: str, threads: int = 1) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError("no_video_stream", f"{video} has no video stream (streams: {', '.join(kinds)})")
    vs = container.streams.video[0]
    # Only the video stream is demuxed; the others are dropped by the demuxer itself.
    for s in container.streams:
        if s.index != vs.index:
            with contextlib.suppress(Exception):
                s.discard = "all"
    if threads != 1:
        vs.thread_type = "AUTO"
        vs.thread_count = threads  # 0 = one per core
    else:
        # Curation runs one worker per core, so a single decode thread per process scales best (anchors §5.1).
        vs.thread_count = 1
    return vs


def _rotation_from_metadata(vs: Any) -> int | None:
    tag = (vs.metadata or {}).get("rotate")
    if tag is None:
        return None
    try:
        # The legacy 'rotate' tag is clockwise; convert to the counter-clockwise convention of the display matrix.
        return (-int(float(tag))) % 360
    except ValueError:
        return None


def _normalise_rotation(deg: float | int | None) -> int:
    if deg is None:
        return 0
    return int(round(float(deg) / 90.0)) % 4 * 90


def _frame_rotation(frame: Any) -> int | None:
    try:
        rot = frame.rotation
    except Exception:
        return None
    return None if rot is None else _normalise_rotation(rot)


def _display_rotation(frame: Any, vs: Any) -> int:
    """How far to turn a decoded frame upright: its own display matrix, else the stream's legacy 'rotate' tag."""
    return _frame_rotation(frame) or _normalise_rotation(_rotation_from_metadata(vs))


# --------------------------------------------------------------------------------------------------------------
# probing


@dataclass
class _StreamTimes:
    tb: Fraction
    start_pts: int  # pts of the first frame (stream start_time), stream time_base units
    duration_s: float | None  # None when neither the stream nor the container knows
    fps: float

    @property
    def frame_ticks(self) -> float:
        """One nominal frame in time-base units (25 fps when the stream declares no rate): the duration given to a
        frame that has none, and the step to the next pts when a frame has no pts."""
        return 1 / (self.fps or 25) / self.tb


def _stream_times(container: Any, vs: Any) -> _StreamTimes:
    tb = vs.time_base or Fraction(1, 90000)
    start_pts = vs.start_time if vs.start_time is not None else 0
    duration_s = None
    if vs.duration is not None and vs.duration > 0:
        duration_s = float(vs.duration * tb)
    elif container.duration is not None and container.duration > 0:
        # Container-level duration is in AV_TIME_BASE (microseconds). Matroska/WebM store the end time of the
        # segment as its "duration" (ffprobe shows the same), other formats the span from the container start.
        c_start = (container.start_time or 0) / 1_000_000
        c_dur = container.duration / 1_000_000
        end_s = c_dur if "matroska" in (container.format.name or "") else c_start + c_dur
        duration_s = end_s - float(start_pts * tb)
        if duration_s <= 0:  # a muxer that wrote the span after all
            duration_s = c_dur
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    fps = float(rate) if rate else 0.0
    return _StreamTimes(tb=tb, start_pts=start_pts, duration_s=duration_s, fps=fps)


def _probe_open(container: Any, vs: Any, video: str, first: Any = None) -> VideoInfo:
    """Stream facts; ``first`` is the first decoded frame when the caller already has it (else decoded here).

    Leaves the container positioned after the first frame unless the duration had to be found by scanning.
    """
    times = _stream_times(container, vs)
    cc = vs.codec_context
    if first is None:
        first = next(_iter_frames(container, vs), None)
    if first is None:
        raise VideoError("unreadable", f"{video}: no frame of the video stream could be decoded")
    rotation = _display_rotation(first, vs)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    fps = times.fps
    duration_s = times.duration_s
    if duration_s is None:
        # Rare (raw elementary streams): count frames, which also gives the true duration.
        duration_s, num_frames = _scan_duration(container, vs, times)
        fps = fps or (num_frames / duration_s if duration_s > 0 else 0.0)
        estimated = False
    elif vs.frames and vs.frames > 0:
        num_frames, estimated = int(vs.frames), False
    else:
        num_frames, estimated = max(1, int(round(duration_s * fps))) if fps else 1, True
    if vs.start_time is not None:
        start_time_s = float(vs.start_time * times.tb)
    else:
        start_time_s = float(first.pts * times.tb) if first.pts is not None else 0.0
    return VideoInfo(
        duration_s=float(duration_s),
        fps=float(fps),
        width_px=int(width),
        height_px=int(height),
        num_frames=int(num_frames),
        rotation_deg=int(rotation),
        codec=str(cc.name),
        pix_fmt=str(first.format.name if first.format is not None else cc.pix_fmt),
        start_time_s=start_time_s,
        is_num_frames_estimated=estimated,
    )


def _scan_duration(container: Any, vs: Any, times: _StreamTimes) -> tuple[float, int]:
    _seek(container, vs, times.start_pts, times)
    first_pts = last_end = None
    count = 0
    for frame in _iter_frames(container, vs):
        if frame.pts is None:
            continue
        count += 1
        first_pts = frame.pts if first_pts is None else first_pts
        dur = frame.duration or times.frame_ticks
        last_end = frame.pts + dur
    if first_pts is None or last_end is None:
        return 0.0, count
    return float((last_end - first_pts) * times.tb), count


def probe(video: str) -> VideoInfo:
    """Container and stream facts of ``video`` (a path or a URI). Decodes only the first frame."""
    video = os.fspath(video)
    with _open(video) as container:
        vs = _video_stream(container, video)
        return _probe_open(container, vs, video)


# --------------------------------------------------------------------------------------------------------------
# decoding primitives


def _iter_frames(
    container: Any, vs: Any, skip_before_pts: list[int | None] | None = None, seen_packet_pts: list[int] | None = None
) -> Iterator[Any]:
    """Decode the video stream from the current position, tolerating damaged packets.

    ``skip_before_pts[0]`` (mutable, read per packet) makes the decoder drop non-reference frames whose packet pts
    is before it: such frames are never needed to decode later ones, and they are not the frame we want.
    ``seen_packet_pts`` collects every demuxed packet's pts so callers can check a skipped frame was not needed.
    """
    import av

    cc = vs.codec_context
    errors = 0
    for packet in _packets(container, vs):
        if skip_before_pts is not None:
            limit = skip_before_pts[0]
            skip = limit is not None and packet.pts is not None and packet.pts < limit
            want = "NONREF" if skip else "DEFAULT"
            if cc.skip_frame != want:
                cc.skip_frame = want
        if seen_packet_pts is not None and packet.pts is not None and packet.size:
            seen_packet_pts.append(packet.pts)
        try:
            frames = vs.decode(packet)
        except av.FFmpegError:
            errors += 1
            if errors > 50:
                break  # a file this damaged is not worth decoding further
            continue
        yield from frames
    if cc.skip_frame != "DEFAULT":
        cc.skip_frame = "DEFAULT"


def _packets(container: Any, vs: Any) -> Iterator[Any]:
    """The stream's packets from the current position, ending where the data ends or is damaged (demuxing beyond
    the damaged end of a truncated file raises instead of stopping)."""
    import av

    packets = container.demux(vs)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.FFmpegError, OSError):
            return
        yield packet


def _to_rgb(frame: Any, rotation: int, max_side_px: int = 0, scaled_wh: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 HxWx3 in display orientation; 10-bit and any pix_fmt are converted by swscale."""
    w, h = frame.width, frame.height
    if scaled_wh is not None:
        w, h = scaled_wh
    elif max_side_px and max(w, h) > max_side_px:
        scale = max_side_px / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    if (w, h) != (frame.width, frame.height):
        arr = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    else:
        arr = frame.to_ndarray(format="rgb24")
    k = rotation // 90 % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    return arr


def _reformatter() -> Any:
    """A swscale context holder that survives across frames: ``frame.reformat`` builds a new context per frame, which
    costs more than scaling a 720p frame down to thumbnail size (bench/data_frames.py)."""
    from av.video.reformatter import VideoReformatter

    return VideoReformatter()


def _seek(container: Any, vs: Any, ts: int, times: _StreamTimes) -> None:
    """Seek to the keyframe at or before ``ts``. At or before the start, aim a second earlier: timestamp-searching
    demuxers (MPEG-TS) compare dts, and the first keyframe's dts is below its pts when the stream has B-frames."""
    import av

    if ts <= times.start_pts:
        ts = times.start_pts - int(1 / times.tb)
    try:
        container.seek(ts, stream=vs, backward=True)
        return
    except av.FFmpegError:
        pass
    try:
        # Seeking past the damaged end of a truncated file can fail: start over from the beginning.
        container.seek(times.start_pts - int(1 / times.tb), stream=vs, backward=True)
    except av.FFmpegError as exc:
        raise VideoError(
            "unreadable",
            f"the container cannot seek ({exc}); raw elementary streams (.h264, .hevc) "
            "must be remuxed first, e.g. ffmpeg -i IN.h264 -c copy OUT.mp4",
        ) from exc


def _clip_window(info: VideoInfo, start_s: float | None, end_s: float | None, video: str) -> tuple[float, float]:
    """``[start_s, end_s)`` checked against the video (None or NaN: its start / end), end clamped to its end."""
    lo = 0.0
    hi = info.duration_s
    a = lo if start_s is None or (isinstance(start_s, float) and math.isnan(start_s)) else float(start_s)
    b = hi if end_s is None or (isinstance(end_s, float) and math.isnan(end_s)) else float(end_s)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise VideoError("bad_time_range", f"{video}: start_s={start_s} end_s={end_s} are not finite numbers")
    if a < lo - 1e-6:
        raise VideoError("bad_time_range", f"{video}: start_s={a} is before the video starts ({lo:.3f} s)")
    if a >= hi:
        raise VideoError("bad_time_range", f"{video}: start_s={a} is at or after the end of the video ({hi:.3f} s)")
    b = min(b, hi)  # an end beyond the video is clamped to the video's end, as video players do
    if b <= a:
        raise VideoError("bad_time_range", f"{video}: end_s={end_s} must be after start_s={a}")
    return a, b
