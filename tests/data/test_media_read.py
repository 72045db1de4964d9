"""The benchmark's readers (alchemist_data.media.read): frames by timestamp as the official code takes them, and
moviepy's clip cutting and resizing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alchemist_data.media import DecodedVideo, VideoError, cut_clip, frame_at_time, read_frames_at_rate, write_video
from alchemist_data.media.read import moviepy_resize
from tests.media import expected_index_at, frame_times, index_frame, make_video, read_index

# Irregular frame times (s): a gap after 0.040, two frames close together at 0.125 / 0.130, 0.250 / 0.260, 0.300.
GAPPY_TIMES = [0.0, 0.040, 0.125, 0.130, 0.250, 0.260, 0.300]


def _indices(frames) -> list[int]:
    return [read_index(f) for f in frames]


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    frames = np.stack([index_frame(i, (160, 120)) for i in range(len(GAPPY_TIMES))])
    return write_video(tmp_path_factory.mktemp("read") / "gappy.mkv", frames, fps=24, times_s=GAPPY_TIMES)


def test_generated_video_frames_are_taken_at_i_over_fps(gappy):
    decoded = read_frames_at_rate(gappy, 12)
    assert decoded.fps == pytest.approx(24.0)
    # Targets i/24 s, tolerance half a frame + 1 ms (21.8 ms): 0 -> f0, 0.042 -> f1 (0.040), 0.083 -> no frame near:
    # f1 on screen, 0.125 -> f2, 0.167 and 0.208 -> f3 on screen, 0.25 -> f4, 0.292 -> f6 (f5 at 0.260 is 32 ms off),
    # 0.333 -> f6 still on screen; 0.375 is past the last frame's display interval: the video is short.
    assert _indices(decoded.frames) == [0, 1, 1, 2, 3, 3, 4, 6, 6]
    assert decoded.times_s == pytest.approx([GAPPY_TIMES[i] for i in (0, 1, 1, 2, 3, 3, 4, 6, 6)])
    # The old rule, the first N decoded frames, gives every frame once.
    assert _indices(decoded.frames) != list(range(len(GAPPY_TIMES)))


def test_constant_rate_video_gives_its_first_frames_also_after_a_start_offset(tmp_path):
    cfr = make_video(tmp_path / "cfr.mp4", seconds=1.0, fps=24)
    offset = make_video(tmp_path / "offset.mkv", seconds=1.0, fps=24, start_time_s=1.5)
    for path in (cfr, offset):
        decoded = read_frames_at_rate(path, 16)
        assert _indices(decoded.frames) == list(range(16))
        assert decoded.times_s == pytest.approx([i / 24 for i in range(16)], abs=1e-3)
    short = read_frames_at_rate(cfr, 30)  # 24 frames: the frames it has, the last one not repeated
    assert _indices(short.frames) == list(range(24))
    everything = read_frames_at_rate(cfr, None)
    assert len(everything.frames) == 24 and everything.num_frames_in_file == 24


def test_bad_generated_videos_raise_video_error(tmp_path):
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoError) as err:
        read_frames_at_rate(tmp_path / "text.mp4", 16)
    assert err.value.reason == "unreadable"
    with pytest.raises(VideoError) as err:
        read_frames_at_rate(tmp_path / "missing.mp4", 16)
    assert err.value.reason == "missing_file"
    with pytest.raises(ValueError, match="num_frames"):
        read_frames_at_rate(tmp_path / "text.mp4", 0)


def test_frame_at_time_is_the_frame_on_screen():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    clip = DecodedVideo(frames=frames, fps=25.0, times_s=np.array([0.0, 0.04, 0.2, 0.21]), num_frames_in_file=4)
    got = [int(frame_at_time(clip, t)[0, 0, 0]) for t in (0.0, 0.039, 0.04, 0.1, 0.2, 0.205, 5.0, -1.0)]
    assert got == [0, 0, 1, 1, 2, 2, 3, 0]
    # Constant rate from 0: moviepy's frame index int(fps * t + 1e-5), including its float slack.
    cfr = DecodedVideo(frames=frames, fps=25.0, times_s=np.arange(4) / 25.0, num_frames_in_file=4)
    for t in (0.0, 0.04 - 1e-9, 0.04, 0.05, 0.12):
        assert int(frame_at_time(cfr, t)[0, 0, 0]) == min(int(25.0 * t + 1e-5), 3)


def test_cut_clip_times_are_relative_to_the_first_frame(tmp_path):
    # 25 fps, first frame at pts 1.5 s (a cut MKV): the annotated [0.5, 1.0) is frames 12..24, as moviepy cuts it.
    source = make_video(tmp_path / "offset.mkv", seconds=2.0, fps=25, start_time_s=1.5)
    clip = cut_clip(source, tmp_path / "clip.mp4", 0.5, 1.0, None)
    assert clip.fps == pytest.approx(25.0)
    assert _indices(clip.frames) == list(range(12, 25))  # numpy.arange(0, 0.5, 1/25): 13 frames


def test_cut_clip_resamples_variable_frame_rate_like_moviepy(tmp_path):
    source = make_video(tmp_path / "vfr.mkv", seconds=3.0, fps=24, vfr=True)
    times = frame_times(3.0, 24, vfr=True)
    clip = cut_clip(source, tmp_path / "clip.mp4", 0.5, 2.0, None)
    # moviepy writes frame k = the source frame on screen at 0.5 + k/24, for k/24 in arange(0, 1.5, 1/24).
    expected = [expected_index_at(times, 0.5 + k / 24) for k in range(len(np.arange(0, 1.5, 1 / 24)))]
    assert _indices(clip.frames) == expected
    assert len(set(expected)) < len(expected)  # some source frames repeat, others are dropped: not a plain cut
    assert clip.times_s == pytest.approx([k / 24 for k in range(len(expected))], abs=1e-3)


def test_cut_clip_past_the_end_repeats_the_last_frame(tmp_path):
    source = make_video(tmp_path / "cfr.mp4", seconds=1.0, fps=24)
    clip = cut_clip(source, tmp_path / "clip.mp4", 0.75, 1.25, None)
    assert _indices(clip.frames) == list(range(18, 24)) + [23] * 6
    with pytest.raises(ValueError, match="end must be after start"):
        cut_clip(source, tmp_path / "bad.mp4", 1.0, 0.5, None)


@pytest.mark.parametrize(
    "size, interpolation",
    [
        ((120, 40), cv2.INTER_LINEAR),  # width grows, height shrinks (the area shrinks): linear
        ((80, 90), cv2.INTER_LINEAR),  # height grows
        ((140, 80), cv2.INTER_LINEAR),  # both grow
        ((80, 40), cv2.INTER_AREA),  # both shrink
        ((100, 40), cv2.INTER_AREA),  # one side kept, the other shrinks
    ],
)
def test_resize_follows_moviepy(size, interpolation):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(moviepy_resize(image, size), cv2.resize(image, size, interpolation=interpolation))
    other = cv2.INTER_AREA if interpolation == cv2.INTER_LINEAR else cv2.INTER_LINEAR
    assert not np.array_equal(moviepy_resize(image, size), cv2.resize(image, size, interpolation=other))


def test_cut_clip_resizes_to_the_annotated_resolution(tmp_path):
    source = make_video(tmp_path / "src.mp4", seconds=0.5, fps=24, size=(160, 120))
    clip = cut_clip(source, tmp_path / "clip.mp4", 0.0, 0.5, (200, 60))  # wider, and less tall
    assert clip.frames.shape == (12, 60, 200, 3)
    src = read_frames_at_rate(source, None).frames
    linear = np.stack([cv2.resize(f, (200, 60), interpolation=cv2.INTER_LINEAR) for f in src]).astype(int)
    area = np.stack([cv2.resize(f, (200, 60), interpolation=cv2.INTER_AREA) for f in src]).astype(int)
    got = clip.frames.astype(int)
    assert np.abs(got - linear).mean() < np.abs(got - area).mean()
