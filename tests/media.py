"""Test media made on the fly with PyAV: nothing is downloaded, every file is a few KB and takes milliseconds.

Frames made by :func:`make_video` carry their own index in a band of black/white cells across the top of the
picture (binary, most significant bit first), which survives lossy compression, so a test can check *which* frame a
decoder returned with :func:`read_index`. Below the band a texture drifts sideways so encoders see real motion.

Everyone may import these helpers: ``from tests.media import make_video, read_index``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

StrPath = str | os.PathLike  # where a helper writes its file
Size = tuple[int, int]  # (width, height) in pixels
RGB = tuple[int, int, int]

INDEX_BITS = 10  # up to 1024 distinguishable frames

#: A caption for manifests of generated clips, with a subject, an object and a background to find.
CAPTION = "A man in a red shirt walks a dog across a park."


def _band_height(height: int) -> int:
    return max(8, height // 4)


def index_frame(index: int, size: Size, texture: np.ndarray | None = None, shift: int = 0) -> np.ndarray:
    """An RGB frame of ``size=(w, h)`` whose top band encodes ``index`` in INDEX_BITS black/white cells."""
    w, h = size
    frame = np.empty((h, w, 3), np.uint8)
    band = _band_height(h)
    if texture is None:
        ramp = np.linspace(40, 200, w, dtype=np.float32)
        frame[:] = ramp[None, :, None].astype(np.uint8)
    else:
        frame[:] = texture[:h, shift : shift + w]
    frame[:band] = 128
    cell = w / INDEX_BITS
    for bit in range(INDEX_BITS):
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        x0, x1 = int(round(bit * cell)), int(round((bit + 1) * cell))
        frame[:band, x0:x1] = 255 if on else 0
    return frame


def read_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` on a decoded frame in its coded orientation."""
    h, w = frame.shape[:2]
    band = _band_height(h)
    cell = w / INDEX_BITS
    gray = frame[..., :3].astype(np.float32).mean(axis=-1)
    value = 0
    for bit in range(INDEX_BITS):
        x0, x1 = int(round(bit * cell)), int(round((bit + 1) * cell))
        # Sample the middle of each cell: edges blur under compression and chroma subsampling.
        cx0, cx1 = x0 + max(1, (x1 - x0) // 4), x1 - max(1, (x1 - x0) // 4)
        cy0, cy1 = band // 4, band - band // 4
        value = (value << 1) | int(gray[cy0:cy1, cx0:cx1].mean() > 127)
    return value


def _texture(size: Size, num_frames: int, seed: int, step: int) -> np.ndarray:
    """A smooth random texture wide enough to slide ``step`` px per frame."""
    w, h = size
    rng = np.random.default_rng(seed)
    total_w = w + step * num_frames + 16
    block = 8
    low = rng.integers(30, 226, (h // block + 2, total_w // block + 2, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(low, block, axis=0), block, axis=1)[:h, :total_w]
    # A diagonal ramp keeps large flat areas from being trivially compressible.
    ramp = (np.add.outer(np.arange(h), np.arange(total_w)) % 64).astype(np.int16) - 32
    return np.clip(tex.astype(np.int16) + ramp[..., None], 0, 255).astype(np.uint8)


def frame_times(seconds: float, fps: float, vfr: bool = False, seed: int = 0) -> list[float]:
    """Timestamps make_video gives its frames: regular at ``fps``, or irregular gaps averaging ``1/fps`` (VFR)."""
    n = max(1, int(round(seconds * fps)))
    if not vfr:
        return [i / fps for i in range(n)]
    rng = np.random.default_rng(seed)
    # Gaps between a third and twice the nominal frame duration, like a phone dropping its rate in low light.
    gaps = rng.uniform(1 / (3 * fps), 2 / fps, n - 1)
    gaps *= (n - 1) / fps / gaps.sum() if n > 1 else 1.0
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    # Millisecond timestamps (the writer's time base) must stay distinct and increasing.
    return [round(float(t), 3) for t in times]


def make_video(
    path: StrPath,
    seconds: float = 2.0,
    fps: float = 24.0,
    size: Size = (160, 120),
    gop: int | None = None,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    rotation: int = 0,
    vfr: bool = False,
    *,
    start_time_s: float = 0.0,
    textured: bool = True,
    crf: float | None = None,
    preset: str | None = "ultrafast",
    seed: int = 0,
    num_frames: int | None = None,
    bframes: int | None = None,
    grain: int = 0,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a test video whose frame i shows index i (see :func:`read_index`). Container from the extension.

    ``rotation`` stores a counter-clockwise display rotation (frames stay in coded orientation); ``vfr`` gives
    irregular timestamps (:func:`frame_times`); ``start_time_s`` shifts every timestamp (as cut MKV/TS files have).
    ``bframes`` (libx264) forces that many B-frames between references, B-pyramid on, like typical web uploads; left
    as None, x264 decides (on this synthetic texture it picks almost none). ``grain`` adds per-frame noise of that
    amplitude (camera-like bitrates for benchmarks). ``options`` go to the encoder (e.g. ``x265-params``).
    """
    from alchemist_data.media import write_video

    times = frame_times(seconds, fps, vfr=vfr, seed=seed)
    if num_frames is not None:
        times = [i / fps for i in range(num_frames)]
    step = 3
    texture = _texture(size, len(times), seed, step) if textured else None
    frames = np.stack([index_frame(i, size, texture, i * step) for i in range(len(times))])
    if grain:
        # A few noise planes, cycled with random offsets: camera-like grain without paying for noise every frame.
        rng = np.random.default_rng(seed + 1)
        w, h = size
        band = _band_height(h)
        planes = rng.integers(-grain, grain + 1, (4, h + 8, w + 8, 1), dtype=np.int16)
        for i in range(len(frames)):
            dy, dx = rng.integers(0, 8, 2)
            noisy = frames[i, band:].astype(np.int16) + planes[i % 4, dy + band : dy + h, dx : dx + w]
            frames[i, band:] = np.clip(noisy, 0, 255).astype(np.uint8)
    use_times = None
    if vfr or start_time_s:
        use_times = [start_time_s + t for t in times]
    options = dict(options or {})
    if codec == "libx264" and preset is not None:
        options["preset"] = preset
    if codec == "libx264" and bframes is not None:
        options["x264-params"] = f"bframes={bframes}:b-adapt=0:b-pyramid=normal" if bframes else "bframes=0"
    return write_video(
        path,
        frames,
        fps=fps,
        codec=codec,
        pix_fmt=pix_fmt,
        gop=gop,
        crf=crf,
        rotation_deg=rotation,
        times_s=use_times,
        options=options,
    )


def make_single_frame(path: StrPath, size: Size = (160, 120)) -> Path:
    """A video with exactly one frame (a still encoded as video)."""
    return make_video(path, size=size, num_frames=1)


def make_audio_only(path: StrPath, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """An AAC-in-MP4 file (``.mp4``/``.m4a``) with a sine tone and no video stream."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        chunk = 1024
        for i in range(0, len(samples), chunk):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + chunk], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = i
            frame.time_base = Fraction(1, sample_rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())  # flush the encoder
    return path


def make_truncated(path: StrPath, fraction: float = 0.4, seconds: float = 2.0, size: Size = (160, 120)) -> Path:
    """A video cut after ``fraction`` of its bytes, as an interrupted download leaves it.

    The container comes from the extension: an ``.mp4`` from PyAV keeps its index (moov) at the end, so a cut MP4
    cannot even be opened; an ``.mkv`` opens and decodes up to the cut, then ends early.
    """
    path = Path(path)
    full = path.with_name(path.stem + ".full" + path.suffix)
    make_video(full, seconds=seconds, size=size, gop=12)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    full.unlink()
    return path


def _write_bytes(path: StrPath, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def text_as_mp4(path: StrPath) -> Path:
    """A text file with a video extension."""
    return _write_bytes(path, b"this is not a video, just text renamed to .mp4\n" * 20)


def zero_bytes(path: StrPath) -> Path:
    return _write_bytes(path, b"")


#: Broken files every decoder must refuse with a VideoError: (file name, the function that writes it or None for a
#: file that does not exist, the error's reason).
BAD_INPUTS = (
    ("missing.mp4", None, "missing_file"),
    ("zero.mp4", zero_bytes, "empty_file"),
    ("text.mp4", text_as_mp4, "unreadable"),
    ("audio.mp4", make_audio_only, "no_video_stream"),
    ("cut.mp4", make_truncated, "unreadable"),  # the MP4 index (moov) is at the end: cut away
)


def assert_refused(decode: Callable[[str], object], folder: Path, name: str, make, reason: str) -> None:
    """``decode`` of the bad input ``name`` written into ``folder`` by ``make`` (one row of BAD_INPUTS) raises a
    VideoError with that ``reason`` and the path in its detail."""
    import pytest

    from alchemist_data.media import VideoError

    path = folder / name
    if make is not None:
        make(path)
    with pytest.raises(VideoError) as err:
        decode(str(path))
    assert err.value.reason == reason
    assert str(path) in err.value.detail


def ffmpeg_rgb24(path: StrPath, *output_options: str) -> np.ndarray:
    """The frames the ffmpeg CLI decodes from ``path`` as raw RGB24 bytes (uint8, flat); ``output_options`` such as
    ``-frames:v 1`` or ``-s 48x27`` go before the output."""
    import subprocess

    command = ["ffmpeg", "-v", "error", "-i", str(path), *output_options, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.uint8)


def media_fixture(folder: str, **make: Callable[[Path], object]):
    """A module-scoped pytest fixture: ``{name: make[name](d)}`` for media made once in a fresh temporary folder
    ``d`` (named after ``folder``); ``dir=lambda d: d`` keeps the folder itself for tests that write next to them."""
    import pytest

    @pytest.fixture(scope="module")
    def made(tmp_path_factory):
        d = tmp_path_factory.mktemp(folder)
        return {name: m(d) for name, m in make.items()}

    return made


def expected_index_at(times: Sequence[float], t: float) -> int:
    """Index of the frame on screen at time ``t`` for frames shown at ``times`` (last one with time <= t)."""
    arr = np.asarray(times)
    return int(np.searchsorted(arr, t + 1e-9, side="right") - 1)


# ----------------------------------------------------------------------------------------------------------------
# shots and motion


def scene_frames(
    num_frames: int,
    size: Size = (160, 120),
    tint: RGB = (230, 60, 40),
    block: int = 8,
    step: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """A scene of ``num_frames`` RGB frames: blocks of random brightness in one ``tint``, sliding ``step`` px per
    frame. Scenes with different tints and block sizes joined back to back are hard cuts TransNetV2 finds."""
    w, h = size
    rng = np.random.default_rng(seed)
    total_w = w + step * num_frames + block
    low = rng.integers(0, 256, (h // block + 2, total_w // block + 2), dtype=np.uint8).astype(np.float32) / 255
    tex = np.repeat(np.repeat(low, block, 0), block, 1)[:h, :total_w, None]
    tint_arr = np.asarray(tint, np.float32)
    img = np.clip(tex * tint_arr + (1 - tex) * tint_arr[::-1] * 0.3, 0, 255).astype(np.uint8)
    return np.stack([img[:, i * step : i * step + w] for i in range(num_frames)])


#: Tints and block sizes of the scenes make_multishot_video joins, cycled.
SCENES = [((230, 60, 40), 8, 3), ((40, 200, 80), 16, 2), ((50, 70, 230), 4, 4), ((220, 210, 60), 12, 3)]


def make_multishot_video(
    path: StrPath,
    shot_frames: Sequence[int] = (50, 45, 60),
    fps: float = 24.0,
    size: Size = (160, 120),
    seed: int = 0,
) -> Path:
    """Shots of ``shot_frames`` frames joined by hard cuts: shot k starts at frame ``sum(shot_frames[:k])``."""
    from alchemist_data.media import write_video

    shots = [
        scene_frames(n, size, *SCENES[k % len(SCENES)][:2], step=SCENES[k % len(SCENES)][2], seed=seed + k)
        for k, n in enumerate(shot_frames)
    ]
    return write_video(path, np.concatenate(shots), fps=fps, options={"preset": "ultrafast"}, threads=1)


def make_still_video(
    path: StrPath,
    seconds: float = 2.0,
    fps: float = 24.0,
    size: Size = (192, 144),
    *,
    pan_px: float = 0.0,
    zoom: float = 0.0,
    object_px: float = 0.0,
    seed: int = 0,
) -> Path:
    """One textured still image for ``seconds``: unchanged, or panned ``pan_px`` px per frame, zoomed by ``zoom``
    (relative) per frame, and/or with a disc crossing it at ``object_px`` px per frame."""
    import cv2

    from alchemist_data.media import write_video

    w, h = size
    n = max(1, int(round(seconds * fps)))
    margin = int(abs(pan_px) * n) + 8
    still = _texture((w + 2 * margin, h + 2 * margin), 1, seed, 1)[: h + 2 * margin, : w + 2 * margin]
    still = cv2.GaussianBlur(still, (0, 0), 1.0)  # real photos have no pixel-sharp block edges
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2 + margin, h / 2 + margin), 0, 1 + zoom * i)
        m[0, 2] -= pan_px * i
        frame = cv2.warpAffine(still, m, still.shape[1::-1], flags=cv2.INTER_LINEAR)[
            margin : margin + h, margin : margin + w
        ].copy()
        if object_px:  # drawn at 1/16 px precision, so slow motion is smooth rather than whole-pixel steps
            centre = (int(round((w * 0.15 + object_px * i) * 16)), int(h / 2 * 16))
            cv2.circle(frame, centre, max(4, h // 10) * 16, (250, 30, 30), -1, lineType=cv2.LINE_AA, shift=4)
        frames.append(frame)
    return write_video(path, np.stack(frames), fps=fps, options={"preset": "ultrafast"}, threads=1)
