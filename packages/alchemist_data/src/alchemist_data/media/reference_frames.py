"""Reference frames (spec §2.1: 5 %, 50 %, 95 % of the clip) by accurate seeking: the seek planner.

Seek to the keyframe at or before the target time, then decode forward to the frame whose display interval covers the
target. Non-reference frames far before a target are skipped by the decoder (``skip_frame=NONREF``), RGB conversion
happens only for the chosen frames, and when two targets share a GOP the decoder keeps going instead of seeking back.
On long-GOP video that makes three frames far cheaper than decoding the clip (see ``bench/data_frames.py``).

``seek="keyframe"`` trades exactness for less decoding (anchors §5.1): each target takes the keyframe at or before
it, which is the first frame decoded after the seek, so nothing is decoded forward. A keyframe before the clip's start
or not after the previously chosen frame is replaced by the exact frame, so the clip still yields the same number of
distinct frames as in exact mode, all inside the clip and in time order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alchemist_data.media.probe import (
    VideoError,
    VideoInfo,
    _clip_window,
    _iter_frames,
    _open,
    _packets,
    _probe_open,
    _seek,
    _stream_times,
    _StreamTimes,
    _to_rgb,
    _video_stream,
)
from alchemist_data.schema import REFERENCE_FRACTIONS

# How reference_frames picks each frame: the frame on screen at the target, or the keyframe at or before it.
SEEK_MODES = ("exact", "keyframe")

# Non-reference frames whose pts is more than this before the next target are skipped by the decoder. Any value is
# correct (a wrongly skipped covering frame is detected and re-decoded); this one rarely needs the retry.
_SKIP_MARGIN_S = 0.2
# Without a keyframe index, keep decoding forward instead of seeking when the next target is this close.
_NO_INDEX_FORWARD_S = 1.0
# Keyframe mode: how far before a keyframe's pts its index entry may lie (B-frame reordering delay, open GOPs).
_DTS_MARGIN_S = 0.25


@dataclass(eq=False)
class _Reader:
    """Forward decoder over one stream with a one-frame look-ahead, able to seek and to skip non-ref frames."""

    container: Any
    vs: Any
    times: _StreamTimes
    stats: dict[str, int]

    def __post_init__(self) -> None:
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
        self.lose_position()

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
        dur = frame.duration or self.times.frame_ticks
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
    dur = frame.duration or times.frame_ticks
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
    one_frame = int(times.frame_ticks)
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
            raise VideoError(
                "truncated",
                f"{video}: decodable data ends at {got:.3f} s but a reference frame at "
                f"{want:.3f} s is needed (truncated or damaged file)",
            )
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
    times = reader.times
    one_frame = int(times.frame_ticks)
    reached = False
    for packet in _packets(reader.container, reader.vs):
        ts = packet.pts if packet.pts is not None else packet.dts  # AVI with B-frames: dts only (<= pts: stricter)
        if ts is None or not packet.size:
            continue
        reached = ts + max(packet.duration or one_frame, 1) + one_frame > target
        if reached:
            break
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
        raise ValueError(
            f"seek must be one of {', '.join(map(repr, SEEK_MODES))} (exact frames at the fractions, or "
            f"the keyframe at or before each), got {seek!r}"
        )
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
            raise VideoError(
                "too_few_frames", f"{video} has {info.num_frames} frame(s); 3 distinct reference frames are needed"
            )
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
            raise VideoError(
                "too_few_frames",
                f"{video}: the clip [{a:.3f}, {b:.3f}) s holds fewer than 3 distinct "
                "frames; 3 distinct reference frames are needed",
            )
        rotation = info.rotation_deg
        cache: dict[int, np.ndarray] = {}
        images = []
        for f in frames:
            if f.pts not in cache:
                cache[f.pts] = _to_rgb(f, rotation, max_side_px)
            images.append(cache[f.pts])
        return info, [float((p - times.start_pts) * tb) for p in pts], images
