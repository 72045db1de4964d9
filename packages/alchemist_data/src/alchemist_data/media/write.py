"""Writing videos (PyAV): browser-friendly H.264 by default, variable frame rate and display rotation on demand."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


def _rate(fps: float) -> Fraction:
    # 29.97 and friends are stored exactly as NTSC rationals.
    return Fraction(fps).limit_denominator(1001)


def encode_and_mux(out: Any, stream: Any, frame: Any) -> None:
    """Encode ``frame`` on ``stream`` and write its packets to the container ``out``; ``None`` flushes the encoder."""
    for packet in stream.encode(frame):
        out.mux(packet)


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
            encode_and_mux(out, stream, frame)
        encode_and_mux(out, stream, None)
    return path
