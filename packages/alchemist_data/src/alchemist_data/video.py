"""Video probing, accurate reference-frame extraction, clip decoding and writing (PyAV).

Time convention used everywhere in this module: seconds from the start of the video, i.e. the first frame of the
video stream is at 0 whatever its container pts (``VideoInfo.start_time_s`` reports that offset; MPEG-TS and cut MKV
files often start at 1.4 s or more). This is what players show and what ``ffmpeg -ss`` means, so ``start_s``/``end_s``
of a manifest and the returned reference times can be handed to :func:`decode_clip` or to ``ffmpeg`` unchanged.
Times come from each frame's pts and the stream's time_base, never from ``frame_index / fps``, which is wrong for
variable-frame-rate video.

Reference frames (spec §2.1: 5 %, 50 %, 95 % of the clip) are found by *accurate seeking*: seek to the keyframe at
or before the target time, then decode forward to the frame whose display interval covers the target. Non-reference
frames far before a target are skipped by the decoder (``skip_frame=NONREF``), RGB conversion happens only for the
chosen frames, and when two targets share a GOP the decoder keeps going instead of seeking back. On long-GOP video
that makes three frames far cheaper than decoding the clip (see ``bench/data_frames.py``).

``seek="keyframe"`` trades exactness for less decoding (anchors §5.1): each target takes the keyframe at or before
it, which is the first frame decoded after the seek, so nothing is decoded forward. A keyframe before the clip's start
or not after the previously chosen frame is replaced by the exact frame, so the clip still yields the same number of
distinct frames as in exact mode, all inside the clip and in time order.

Bad input raises :class:`VideoError` whose ``reason`` is a stable code the curation stage writes to ``rejects``:
``missing_file``, ``empty_file``, ``unreadable``, ``no_video_stream``, ``too_few_frames`` (fewer than 3 distinct
frames in the clip: the paper needs three distinct reference times), ``bad_time_range`` and ``truncated`` (the file
opens but its data ends before a needed frame).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FRACTIONS = (0.05, 0.50, 0.95)
# How reference_frames picks each frame: the frame on screen at the target, or the keyframe at or before it.
SEEK_MODES = ("exact", "keyframe")

# Non-reference frames whose pts is more than this before the next target are skipped by the decoder. Any value is
# correct (a wrongly skipped covering frame is detected and re-decoded); this one rarely needs the retry.
_SKIP_MARGIN_S = 0.2
# Without a keyframe index, keep decoding forward instead of seeking when the next target is this close.
_NO_INDEX_FORWARD_S = 1.0
# Keyframe mode: how far before a keyframe's pts its index entry may lie (B-frame reordering delay, open GOPs).
_DTS_MARGIN_S = 0.25


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


def _is_uri(video: str) -> bool:
    return "://" in video


@contextlib.contextmanager
def _open(video: str | os.PathLike) -> Iterator[Any]:
    """Open ``video`` (a local path or a URI any pyarrow filesystem understands) as a PyAV input container."""
    import av

    video = os.fspath(video)
    if not video:
        raise VideoError("missing_file", "the video path is empty; give a file path or a URI in the manifest")
    handle = None
    if _is_uri(video):
        from pyarrow import fs as pafs

        try:
            filesystem, path = pafs.FileSystem.from_uri(video)
            info = filesystem.get_file_info(path)
        except Exception as exc:  # unknown scheme, bad bucket, no credentials ...
            raise VideoError("missing_file", f"cannot open URI {video!r}: {exc}") from exc
        if info.type == pafs.FileType.NotFound:
            raise VideoError("missing_file", f"{video} does not exist")
        if info.type != pafs.FileType.File:
            raise VideoError("missing_file", f"{video} is not a file")
        if info.size == 0:
            raise VideoError("empty_file", f"{video} has zero bytes")
        handle = filesystem.open_input_file(path)  # random access, so PyAV can seek
        source: Any = handle
    else:
        path = Path(video).expanduser()
        if not path.exists():
            raise VideoError("missing_file", f"{video} does not exist")
        if not path.is_file():
            raise VideoError("missing_file", f"{video} is not a file")
        if path.stat().st_size == 0:
            raise VideoError("empty_file", f"{video} has zero bytes")
        source = str(path)
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


# --------------------------------------------------------------------------------------------------------------
# probing


@dataclass
class _StreamTimes:
    tb: Fraction
    start_pts: int  # pts of the first frame (stream start_time), stream time_base units
    duration_s: float | None  # None when neither the stream nor the container knows
    fps: float


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
    rotation = _frame_rotation(first)
    if not rotation:
        rotation = _normalise_rotation(_rotation_from_metadata(vs))
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
        dur = frame.duration or (1 / (times.fps or 25) / times.tb)
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
# decoding helpers


def _iter_frames(container: Any, vs: Any, skip_before_pts: list[int | None] | None = None,
                 seen_packet_pts: list[int] | None = None) -> Iterator[Any]:
    """Decode the video stream from the current position, tolerating damaged packets.

    ``skip_before_pts[0]`` (mutable, read per packet) makes the decoder drop non-reference frames whose packet pts
    is before it: such frames are never needed to decode later ones, and they are not the frame we want.
    ``seen_packet_pts`` collects every demuxed packet's pts so callers can check a skipped frame was not needed.
    """
    import av

    cc = vs.codec_context
    errors = 0
    packets = container.demux(vs)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            break  # demuxing beyond the damaged end of a truncated file
        except OSError:
            break
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
        raise VideoError("unreadable", f"the container cannot seek ({exc}); raw elementary streams (.h264, .hevc) "
                         "must be remuxed first, e.g. ffmpeg -i IN.h264 -c copy OUT.mp4") from exc


class _Reader:
    """Forward decoder over one stream with a one-frame look-ahead, able to seek and to skip non-ref frames."""

    def __init__(self, container: Any, vs: Any, times: _StreamTimes, stats: dict[str, int]):
        self.container = container
        self.vs = vs
        self.times = times
        self.stats = stats
        self.skip_before: list[int | None] = [None]
        self.packet_pts: list[int] = []
        self._gen: Iterator[Any] | None = None
        self._pending: Any = None  # a decoded frame not consumed yet (pts beyond the previous target)
        self.last: Any = None  # the last frame handed out (pts <= its target)
        self.at_start = True  # nothing skipped since the start of the stream: decoding on costs no seek
        self.eof = False
        self._fallback_pts = 0
        self._index_len = -1
        self._keyframe_ts: list[int] = []
        self._index_end = None

    def _frames(self) -> Iterator[Any]:
        if self._gen is None:
            self._gen = _iter_frames(self.container, self.vs, self.skip_before, self.packet_pts)
        return self._gen

    def seek(self, ts: int) -> None:
        _seek(self.container, self.vs, ts, self.times)
        self.stats["seeks"] += 1
        self.at_start = False
        self._gen = None
        self._pending = None
        self.last = None
        self.eof = False
        self.packet_pts = []

    def next_frame(self) -> Any:
        if self._pending is not None:
            f, self._pending = self._pending, None
            return f
        try:
            frame = next(self._frames())
        except StopIteration:
            self.eof = True
            return None
        self.stats["frames_decoded"] += 1
        if frame.pts is None:  # some raw streams: extrapolate from the previous frame
            frame.pts = self._fallback_pts
        dur = frame.duration or (1 / (self.times.fps or 25) / self.times.tb)
        self._fallback_pts = frame.pts + int(dur)
        return frame

    def push_back(self, frame: Any) -> None:
        self._pending = frame

    def lose_position(self) -> None:
        """Forget where decoding stands (the demuxer was read elsewhere): the next target must seek."""
        self._gen = None
        self._pending = None
        self.last = None
        self.at_start = False
        self.eof = False
        self.packet_pts = []

    def keyframe_between(self, lo: int, hi: int, slack: int = 0) -> bool | None:
        """Whether the demuxer's index has a keyframe in (lo, hi]; None when the index cannot say.

        The index is complete up front for MP4/MOV (every sample, timestamps are dts), filled lazily for Matroska
        (cues load on the first seek) and built while reading for others, so it is trusted only when it reaches
        past ``hi - slack`` (a complete MP4 index ends at the last sample's dts, which trails the last pts).
        """
        import bisect

        try:
            entries = self.vs.index_entries
            n = len(entries)
            if n != self._index_len:  # re-read only when the demuxer added entries
                self._index_len = n
                self._keyframe_ts = sorted(e.timestamp for e in entries if e.is_keyframe)
                self._index_end = max((e.timestamp for e in entries), default=None) if n else None
        except Exception:
            return None
        if not self._keyframe_ts or self._index_end is None or self._index_end < hi - slack:
            return None
        i = bisect.bisect_right(self._keyframe_ts, lo)
        return i < len(self._keyframe_ts) and self._keyframe_ts[i] <= hi


def _frame_end(frame: Any, times: _StreamTimes) -> int:
    dur = frame.duration or (1 / (times.fps or 25) / times.tb)
    return frame.pts + int(max(1, dur))


def _find_covering(reader: _Reader, target: int, allow_skip: bool) -> Any:
    """Decode forward from the reader's position to the frame whose [pts, next pts) contains ``target``."""
    times = reader.times
    margin = int(_SKIP_MARGIN_S / times.tb)
    reader.skip_before[0] = target - margin if allow_skip else None
    prev = reader.last
    while True:
        frame = reader.next_frame()
        if frame is None:
            break
        if frame.pts > target:
            reader.push_back(frame)
            break
        prev = frame
        if frame.duration and frame.pts + frame.duration > target:
            break  # the frame's own duration already covers the target: no need to decode the next one
    reader.skip_before[0] = None
    if prev is not None:
        reader.last = prev
    return prev


def _can_continue(reader: _Reader, target: int) -> bool:
    """Whether decoding forward from the reader's position is no more work than seeking to ``target``."""
    times = reader.times
    if reader.last is not None:
        origin = reader.last.pts
    elif reader.at_start:
        origin = times.start_pts  # at the start: the keyframe there is where decoding begins anyway
    else:
        return False
    if origin > target:
        return False
    between = reader.keyframe_between(origin, target)
    if between is None:  # no index: guess from the distance
        return float((target - origin) * times.tb) <= _NO_INDEX_FORWARD_S
    return not between


def _plan_and_decode(reader: _Reader, targets: list[int], video: str) -> list[Any]:
    """Frames covering each target (targets ascending, stream time_base units)."""
    times, stats = reader.times, reader.stats
    tb = times.tb
    one_frame = int(1 / (times.fps or 25) / tb)
    chosen: list[Any] = []
    for target in targets:
        frame = None
        back_s = 0.0
        allow_skip = True
        for attempt in range(10):
            if attempt > 0 or not _can_continue(reader, target):
                reader.seek(target - int(back_s / tb))
            frame = _find_covering(reader, target, allow_skip)
            if frame is None:
                if target - int(back_s / tb) <= times.start_pts:
                    break  # even decoding from the very start gives no frame at or before the target
                # The seek landed after the target: the demuxer's index may hold dts (B-frame delay), or the
                # keyframe index is coarse. Go further back.
                back_s = max(1.0, back_s * 2)
                continue
            seen = [p for p in reader.packet_pts if p <= target]
            if allow_skip and seen and max(seen) > frame.pts:
                allow_skip = False  # a skipped non-ref frame was the covering one (VFR gap): decode it for real
                continue
            break
        if frame is None:
            if stats["frames_decoded"] <= 1:
                raise VideoError("unreadable", f"{video}: no frame of the video stream could be decoded")
            want = float((target - times.start_pts) * tb)
            raise VideoError("truncated", f"{video}: no decodable frame at or before {want:.3f} s")
        if reader.eof and reader._pending is None and target >= _frame_end(frame, times) + one_frame:
            # The data ended more than a frame before the target: the file is shorter than its header says.
            got = float((_frame_end(frame, times) - times.start_pts) * tb)
            want = float((target - times.start_pts) * tb)
            raise VideoError("truncated", f"{video}: decodable data ends at {got:.3f} s but a reference frame at "
                             f"{want:.3f} s is needed (truncated or damaged file)")
        chosen.append(frame)
    return chosen


def _keyframe_at_or_before(reader: _Reader, target: int) -> tuple[Any | None, bool]:
    """The keyframe at or before ``target``, decoding only that frame (None when not found), and whether the seek
    landed after the target.

    The stream's first frame is still pending after the probe: when the index shows no later keyframe up to the
    target it is the answer without a seek. Otherwise seek back from the target and take the first decoded frame.
    That is not the wanted keyframe when the demuxer's index holds dts (the seek can land on a keyframe whose pts is
    after the target) or the container seeks by timestamp (MPEG-TS: the decoder may then hand out a non-key frame);
    both give None and the caller falls back to the exact frame.
    """
    first = reader._pending
    if reader.at_start and reader.last is None and first is not None and first.key_frame:
        if reader.keyframe_between(first.pts, target) is False and first.pts <= target:
            reader.last = reader.next_frame()
            return reader.last, False
    reader.seek(target)
    frame = reader.next_frame()
    if frame is None:
        return None, True
    if frame.pts > target:
        reader.push_back(frame)
        return None, True
    reader.last = frame  # decoding on from here is valid, so an exact fallback can continue instead of seeking
    return (frame if frame.key_frame else None), False


def _data_reaches(reader: _Reader, target: int) -> bool:
    """Whether the stream has data at ``target``: demux (without decoding) from the reader's position.

    A keyframe found by seeking says nothing about the data after it; a truncated file would silently give a
    keyframe from its decodable part for a target past its end, where exact mode reports ``truncated``. Uses the
    same tolerance as exact mode (the last frame may end up to one frame before the target).
    """
    import av

    times = reader.times
    one_frame = int(1 / (times.fps or 25) / times.tb)
    reached = False
    packets = reader.container.demux(reader.vs)
    while not reached:
        try:
            packet = next(packets)
        except (StopIteration, av.FFmpegError, OSError):
            break
        ts = packet.pts if packet.pts is not None else packet.dts  # AVI with B-frames: dts only (<= pts: stricter)
        if ts is None or not packet.size:
            continue
        reached = ts + max(packet.duration or one_frame, 1) + one_frame > target
    reader.lose_position()  # the demuxer has moved on without the decoder
    return reached


def _plan_keyframes(reader: _Reader, targets: list[int], clip_start: int, video: str) -> list[Any]:
    """Per target (ascending): the keyframe at or before it when it is at or after ``clip_start`` and after the
    previously chosen frame, else the exact frame covering the target (the same frame exact mode would pick)."""
    times = reader.times
    # MP4/MOV indexes hold dts, which trail pts by the B-frame delay: a keyframe at pts >= floor may be indexed a few
    # frames earlier. Looking that much further back costs at most a seek and a few re-decoded frames.
    dts_margin = int(_DTS_MARGIN_S / times.tb)
    chosen: list[Any] = []
    keyed: list[bool] = []
    seekable = True  # False once a seek landed after its target (MPEG-TS): later tries would only waste seeks
    for target in targets:
        floor = chosen[-1].pts + 1 if chosen else clip_start
        # A keyframe chosen last time is itself indexed at or before its pts: no margin, or it would always match.
        lo = floor - 1 if keyed and keyed[-1] else floor - 1 - dts_margin
        frame = None
        # When the index shows the keyframe is before the floor, decode on from the previous frame without a seek.
        if seekable and reader.keyframe_between(lo, target, slack=dts_margin) is not False:
            frame, landed_after = _keyframe_at_or_before(reader, target)
            seekable = not landed_after
        if frame is not None and frame.pts >= floor:
            chosen.append(frame)
            keyed.append(True)
        else:
            # Falling back keeps the frames distinct and inside the clip: an exact frame equals the previous choice
            # only when exact mode would repeat a frame too.
            chosen.extend(_plan_and_decode(reader, [target], video))
            keyed.append(False)
    if keyed and keyed[-1] and not _data_reaches(reader, targets[-1]):
        # Truncated or damaged tail: the exact decode of the last target raises the same error as exact mode.
        chosen[-1] = _plan_and_decode(reader, [targets[-1]], video)[0]
    return chosen


def _clip_window(info: VideoInfo, start_s: float | None, end_s: float | None, video: str) -> tuple[float, float]:
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


def reference_frames(
    video: str,
    start_s: float | None = None,
    end_s: float | None = None,
    fractions: Sequence[float] = REFERENCE_FRACTIONS,
    max_side_px: int = 0,
    *,
    threads: int = 1,
    stats: dict[str, int] | None = None,
    seek: str = "exact",
) -> tuple[VideoInfo, list[float], list[np.ndarray]]:
    """The frames at ``fractions`` of the clip [start_s, end_s) (whole video when None), by accurate seeking.

    Returns the probe info, the frames' own timestamps (seconds from the video's first frame; each is the pts of
    the frame on screen at the target time, so ``t <= target < t + frame duration``) and RGB uint8 HxWx3 arrays in
    display orientation, downsized to ``max_side_px`` on the longer side when it is > 0. ``stats`` (optional dict)
    receives ``frames_decoded`` and ``seeks``.

    ``seek="keyframe"`` returns, for each target, the keyframe at or before it instead (``t <= target``, decoding
    just that frame), unless that keyframe lies before ``start_s`` or is not after the frame chosen for the previous
    target; then the exact frame is used. The returned times are the chosen frames' own timestamps.
    """
    video = os.fspath(video)
    if seek not in SEEK_MODES:
        raise ValueError(f"seek must be one of {', '.join(map(repr, SEEK_MODES))} (exact frames at the fractions, or "
                         f"the keyframe at or before each), got {seek!r}")
    stats = stats if stats is not None else {}
    stats.update(frames_decoded=0, seeks=0)
    if not fractions:
        raise ValueError("fractions must name at least one position in [0, 1], e.g. (0.05, 0.5, 0.95)")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {tuple(fractions)}")
    with _open(video) as container:
        vs = _video_stream(container, video, threads)
        times = _stream_times(container, vs)
        reader = _Reader(container, vs, times, stats)
        # The probe's first frame is the reader's first frame too: the stream is decoded once, from the start.
        first = reader.next_frame()
        info = _probe_open(container, vs, video, first)
        if times.duration_s is None:  # the probe scanned the stream to find its end: rewind
            _seek(container, vs, times.start_pts, times)
            reader = _Reader(container, vs, times, stats)
        else:
            reader.push_back(first)
        if not info.is_num_frames_estimated and info.num_frames < min(3, len(fractions)):
            raise VideoError("too_few_frames", f"{video} has {info.num_frames} frame(s); 3 distinct reference "
                             "frames are needed")
        a, b = _clip_window(info, start_s, end_s, video)
        tb = times.tb
        # Targets strictly inside [a, b): 100 % would be the first frame after the clip.
        targets_s = [min(a + f * (b - a), b - 1e-6) for f in fractions]
        order = sorted(range(len(targets_s)), key=lambda i: targets_s[i])
        targets_ts = [times.start_pts + int(math.floor(targets_s[i] / tb + 1e-6)) for i in order]
        if seek == "keyframe":
            clip_start_ts = times.start_pts + int(math.ceil(a / tb - 1e-6))
            frames_sorted = _plan_keyframes(reader, targets_ts, clip_start_ts, video)
        else:
            frames_sorted = _plan_and_decode(reader, targets_ts, video)
        frames: list[Any] = [None] * len(targets_s)
        for i, f in zip(order, frames_sorted, strict=True):
            frames[i] = f
        pts = [f.pts for f in frames]
        if len(fractions) >= 3 and len(set(pts)) < 3:
            raise VideoError("too_few_frames", f"{video}: the clip [{a:.3f}, {b:.3f}) s holds fewer than 3 distinct "
                             "frames; 3 distinct reference frames are needed")
        rotation = info.rotation_deg
        cache: dict[int, np.ndarray] = {}
        images = []
        for f in frames:
            if f.pts not in cache:
                cache[f.pts] = _to_rgb(f, rotation, max_side_px)
            images.append(cache[f.pts])
        return info, [float((p - times.start_pts) * tb) for p in pts], images


def decode_all_frames(video: str, *, threads: int = 1) -> Iterator[np.ndarray]:
    """Every frame of the video as RGB uint8 HxWx3 (display orientation): the naive baseline of the bench."""
    video = os.fspath(video)
    with _open(video) as container:
        vs = _video_stream(container, video, threads)
        rotation = None
        for frame in _iter_frames(container, vs):
            if rotation is None:
                rotation = _frame_rotation(frame) or _normalise_rotation(_rotation_from_metadata(vs))
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


def _rate(fps: float) -> Fraction:
    # 29.97 and friends are stored exactly as NTSC rationals.
    return Fraction(fps).limit_denominator(1001)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 24.0,
    codec: str = "libx264",
    *,
    pix_fmt: str | None = None,
    gop: int | None = None,
    crf: float | None = None,
    preset: str | None = None,
    bit_rate: int | None = None,
    rotation_deg: int = 0,
    times_s: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
    threads: int = 0,
) -> Path:
    """Encode RGB uint8 frames [T, H, W, 3] to ``path`` (container from the extension, e.g. .mp4/.mkv/.mov).

    Defaults give a browser-friendly H.264 yuv420p MP4. 4:2:0 formats need even sizes, so odd widths/heights are
    padded by one replicated edge pixel. ``times_s`` gives each frame's timestamp (variable frame rate);
    ``rotation_deg`` stores a counter-clockwise display rotation in the container (frames are stored as given).
    ``gop`` is the keyframe interval (also disables scene-cut keyframes so the interval is exact).
    """
    import av

    path = Path(path)
    arrays = frames if isinstance(frames, np.ndarray) else np.stack(list(frames))
    if arrays.ndim != 4 or arrays.shape[-1] != 3 or arrays.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {arrays.dtype} {arrays.shape}")
    if len(arrays) == 0:
        raise ValueError("frames is empty: a video needs at least one frame")
    if times_s is not None and len(times_s) != len(arrays):
        raise ValueError(f"times_s has {len(times_s)} entries for {len(arrays)} frames")
    if codec in ("libx264", "h264", "libx265", "hevc") and pix_fmt is None:
        pix_fmt = "yuv420p"
    _, h, w, _ = arrays.shape
    needs_even = pix_fmt is not None and ("420" in pix_fmt or "nv12" in pix_fmt or "422" in pix_fmt)
    pad_w, pad_h = (w % 2, h % 2) if needs_even else (0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = dict(options or {})
    if crf is not None:
        opts["crf"] = str(crf)
    if preset is not None:
        opts["preset"] = preset
    if gop is not None and codec == "libx264":
        # An exact keyframe interval: no scene-cut keyframes (x264 otherwise inserts them at content changes).
        extra = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        opts["x264-params"] = f"{opts['x264-params']}:{extra}" if opts.get("x264-params") else extra
    rate = _rate(fps)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate, options=opts)
        stream.width = w + pad_w
        stream.height = h + pad_h
        if pix_fmt is not None:
            stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bit_rate is not None:
            stream.codec_context.bit_rate = bit_rate
        if threads:
            stream.codec_context.thread_count = threads
        if times_s is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation_deg % 360:
            stream.set_display_rotation(int(rotation_deg))
        for i, arr in enumerate(arrays):
            if pad_w or pad_h:
                arr = np.pad(arr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            if times_s is not None:
                frame.pts = int(round(times_s[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
