"""decode_all_frames_lowres: every frame at TransNetV2's 48x27, both backends, on generated media."""

from __future__ import annotations

import shutil
from functools import partial

import cv2
import numpy as np
import pytest

from alchemist_data.media import VideoError, decode_all_frames, decode_all_frames_lowres
from tests.media import (
    BAD_INPUTS,
    assert_refused,
    ffmpeg_rgb24,
    frame_times,
    make_truncated,
    make_video,
    media_fixture,
)

BACKENDS = ("pyav", "decord")


# Untextured: a horizontal ramp under the index band. Smooth content, so scalers with different kernels give
# nearly the same thumbnail and the backends can be compared pixel by pixel.
make_ramp_video = partial(make_video, textured=False)
clips = media_fixture(
    "lowres",
    cfr=lambda d: make_ramp_video(d / "cfr.mp4", seconds=2.0, fps=24, size=(160, 120), bframes=3),
    vfr=lambda d: make_ramp_video(d / "vfr.mkv", seconds=2.0, fps=24, size=(160, 120), vfr=True, bframes=2),
    offset=lambda d: make_ramp_video(d / "offset.mkv", seconds=1.0, fps=25, size=(160, 120), start_time_s=1.5),
    odd=lambda d: make_ramp_video(d / "odd.mp4", seconds=1.0, fps=24, size=(161, 121), pix_fmt="yuv444p"),
    dir=lambda d: d,
)


def _thumbnails(path, size=(48, 27)) -> np.ndarray:
    """Display-orientation frames of the media layer's full decode, shrunk with OpenCV: an independent reference."""
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in decode_all_frames(str(path))])


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_frame_at_48x27_with_its_timestamp(clips, backend):
    frames, fps, times = decode_all_frames_lowres(str(clips["cfr"]), backend=backend)
    assert frames.shape == (48, 27, 48, 3) and frames.dtype == np.uint8  # 2 s at 24 fps: every frame
    assert fps == pytest.approx(24.0)
    assert times == pytest.approx(frame_times(2.0, 24), abs=1e-3)
    assert np.all(np.diff(times) > 0)
    assert _mean_abs(frames, _thumbnails(clips["cfr"])) < 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_and_start_offset_timestamps(clips, backend):
    frames, _, times = decode_all_frames_lowres(str(clips["vfr"]), backend=backend)
    expected = frame_times(2.0, 24, vfr=True)
    assert len(frames) == len(times) == len(expected)
    assert times == pytest.approx(expected, abs=1e-3)  # the frames' own times, not index / fps
    _, _, times = decode_all_frames_lowres(str(clips["offset"]), backend=backend)
    assert times[0] == 0.0 and times == pytest.approx([i / 25 for i in range(25)], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["cfr", "vfr", "offset"])
def test_stop_s_gives_the_frames_that_start_before_it(clips, backend, name):
    full, _, times = decode_all_frames_lowres(str(clips[name]), backend=backend)
    stop_s = float(times[len(times) // 2]) - 1e-4  # just before the middle frame: the first half exactly
    frames, _, head = decode_all_frames_lowres(str(clips[name]), backend=backend, stop_s=stop_s)
    assert len(frames) == len(times) // 2 and np.all(head < stop_s)
    assert np.array_equal(frames, full[: len(frames)]) and head == pytest.approx(times[: len(frames)])


def test_backends_agree(clips):
    a, fps_a, t_a = decode_all_frames_lowres(str(clips["cfr"]), backend="pyav")
    b, fps_b, t_b = decode_all_frames_lowres(str(clips["cfr"]), backend="decord")
    assert a.shape == b.shape and fps_a == fps_b
    np.testing.assert_allclose(t_a, t_b, atol=1e-3)
    # Bicubic in swscale against decord's bilinear + INTER_AREA: about 1.3 grey levels apart on this clip.
    assert _mean_abs(a, b) < 3
    per_frame = np.abs(a.reshape(len(a), -1).mean(1) - b.reshape(len(b), -1).mean(1))
    assert per_frame.max() < 2  # the same frame at every index


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_gives_display_orientation(tmp_path, backend, rotation):
    path = make_ramp_video(tmp_path / f"rot{rotation}.mp4", seconds=0.5, size=(160, 120), rotation=rotation)
    frames, _, _ = decode_all_frames_lowres(str(path), backend=backend)
    assert frames.shape == (12, 27, 48, 3)
    reference = _thumbnails(path)
    assert _mean_abs(frames, reference) < 3
    assert _mean_abs(frames, reference[:, ::-1, ::-1]) > 10  # the ramp and band make a wrong turn visible


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_source_size_and_other_target_sizes(clips, backend):
    frames, _, _ = decode_all_frames_lowres(str(clips["odd"]), backend=backend)
    assert frames.shape == (24, 27, 48, 3)
    assert _mean_abs(frames, _thumbnails(clips["odd"])) < 3
    # 36 px wide: decord would scale to 48 px first, a width it cannot deliver, and must pick another.
    frames, _, _ = decode_all_frames_lowres(str(clips["odd"]), width=36, height=21, backend=backend)
    assert frames.shape == (24, 21, 36, 3)
    assert _mean_abs(frames, _thumbnails(clips["odd"], (36, 21))) < 3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")
def test_pyav_backend_gives_what_transnetv2_reads_from_ffmpeg(clips):
    # TransNetV2's predict_video: ffmpeg -i VIDEO -f rawvideo -pix_fmt rgb24 -s 48x27 (bicubic scaling by default).
    path = make_video(clips["dir"] / "textured.mp4", seconds=1.0, size=(320, 180), grain=8)
    official = ffmpeg_rgb24(path, "-s", "48x27").reshape(-1, 27, 48, 3)
    frames, _, _ = decode_all_frames_lowres(str(path), backend="pyav")
    assert frames.shape == official.shape
    # About 1 grey level apart on this grainy clip (0.1 on a 720p one): the swscale of PyAV's FFmpeg build is not the
    # system ffmpeg's. A bilinear scaler is 5 levels away.
    assert _mean_abs(frames, official) < 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_uri_through_pyarrow_filesystem(clips, backend):
    uri = clips["cfr"].resolve().as_uri()  # file:///...
    frames, _, _ = decode_all_frames_lowres(uri, backend=backend)
    assert len(frames) == 48
    with pytest.raises(VideoError) as err:
        decode_all_frames_lowres(uri + ".missing.mp4", backend=backend)
    assert err.value.reason == "missing_file"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_video_in_an_s3_store(s3, clips, backend):
    s3.create_bucket(f"lowres-{backend}")
    s3.client().upload_file(str(clips["vfr"]), f"lowres-{backend}", "v/vfr.mkv")
    frames, _, times = decode_all_frames_lowres(f"s3://lowres-{backend}/v/vfr.mkv", backend=backend)
    local, _, local_times = decode_all_frames_lowres(str(clips["vfr"]), backend=backend)
    np.testing.assert_array_equal(frames, local)
    np.testing.assert_array_equal(times, local_times)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, make, reason", BAD_INPUTS)
def test_bad_input_raises_video_error(tmp_path, backend, name, make, reason):
    assert_refused(partial(decode_all_frames_lowres, backend=backend), tmp_path, name, make, reason)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_gives_the_frames_before_the_cut(tmp_path, backend):
    path = make_truncated(tmp_path / "cut.mkv", fraction=0.4)  # opens, decodes about 40 % of its 48 frames
    frames, _, times = decode_all_frames_lowres(str(path), backend=backend)
    assert 5 < len(frames) < 48 and len(times) == len(frames)
    assert np.all(np.diff(times) > 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "ffmpeg"}, "'auto', 'pyav', 'decord'"),
        ({"width": 0}, "positive integers"),
        ({"height": 13.5}, "positive integers"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_arguments_are_value_errors(clips, kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode_all_frames_lowres(str(clips["cfr"]), **kwargs)
