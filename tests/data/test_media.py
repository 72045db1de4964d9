"""alchemist_data.media on generated media: probe, accurate reference frames, clip decoding, bad input."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from alchemist_data.media import (
    VideoError,
    decode_all_frames,
    decode_clip,
    probe,
    reference_frames,
    write_video,
)
from tests.media import (
    BAD_INPUTS,
    assert_refused,
    expected_index_at,
    ffmpeg_rgb24,
    frame_times,
    make_single_frame,
    make_truncated,
    make_video,
    media_fixture,
    read_index,
)

FRACTIONS = (0.05, 0.5, 0.95)


media = media_fixture(
    "video",
    cfr=lambda d: make_video(d / "cfr.mp4", seconds=2.0, fps=24, size=(160, 120)),
    # 8 s at 24 fps, one keyframe every 60 frames, B-frames: seeking and skipping both matter here.
    long=lambda d: make_video(d / "long.mp4", seconds=8.0, fps=24, size=(160, 120), gop=60, bframes=3),
    vfr=lambda d: make_video(d / "vfr.mp4", seconds=3.0, fps=24, size=(160, 120), vfr=True, bframes=2),
    offset=lambda d: make_video(d / "offset.mkv", seconds=2.0, fps=25, size=(160, 120), start_time_s=1.5),
    ten_bit=lambda d: make_video(d / "tenbit.mp4", seconds=1.0, fps=24, size=(160, 120), pix_fmt="yuv420p10le"),
    odd=lambda d: make_video(d / "odd.mp4", seconds=1.0, fps=24, size=(161, 121), pix_fmt="yuv444p"),
)

#: Open GOP: leading B-frames before a keyframe are undecodable after a seek to it, so the seek backs off.
OPEN_GOP_VIDEOS = [
    ("open_gop.mp4", {"gop": 24, "options": {"x264-params": "open-gop=1:bframes=3:b-adapt=0"}}),
    (
        "open_gop_hevc.mkv",
        {
            "codec": "libx265",
            "options": {"x265-params": "keyint=24:min-keyint=24:bframes=3:open-gop=1:log-level=error"},
        },
    ),
]


def _indices(frames, rotation=0):
    return [read_index(np.rot90(f, k=-(rotation // 90))) for f in frames]


def test_probe_reports_stream_facts(media):
    info = probe(str(media["cfr"]))
    assert (info.width_px, info.height_px) == (160, 120)
    assert info.fps == pytest.approx(24.0)
    assert info.duration_s == pytest.approx(2.0, abs=1e-3)
    assert info.num_frames == 48 and not info.is_num_frames_estimated
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.rotation_deg == 0 and info.start_time_s == 0.0


def test_reference_frames_are_the_frames_on_screen_at_5_50_95_percent(media):
    info, times, frames = reference_frames(str(media["cfr"]))
    expected = [expected_index_at(frame_times(2.0, 24), f * info.duration_s) for f in FRACTIONS]
    assert _indices(frames) == expected == [2, 24, 45]
    assert times == pytest.approx([i / 24 for i in expected])
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)


def test_long_gop_with_b_frames_is_exact_and_decodes_a_fraction_of_the_clip(media):
    stats: dict[str, int] = {}
    info, times, frames = reference_frames(str(media["long"]), stats=stats)
    expected = [expected_index_at(frame_times(8.0, 24), f * info.duration_s) for f in FRACTIONS]
    assert _indices(frames) == expected
    # 192 frames in GOPs of 60: seeking to each target's GOP and skipping non-reference frames on the way there
    # decodes well under half of them.
    assert stats["seeks"] >= 1
    assert stats["frames_decoded"] < info.num_frames / 2


def test_same_result_as_decoding_everything(media):
    everything = list(decode_all_frames(str(media["long"])))
    assert len(everything) == 192
    _, times, frames = reference_frames(str(media["long"]))
    for t, f in zip(times, frames, strict=True):
        np.testing.assert_array_equal(f, everything[int(round(t * 24))])


def test_variable_frame_rate_uses_timestamps_not_frame_counts(media):
    info, times, frames = reference_frames(str(media["vfr"]))
    ts = frame_times(3.0, 24, vfr=True)
    expected = [expected_index_at(ts, f * info.duration_s) for f in FRACTIONS]
    assert _indices(frames) == expected
    assert times == pytest.approx([ts[i] for i in expected], abs=1e-3)
    # The naive frame-index guess (fraction * frame count) would pick other frames on this clip.
    naive = [int(f * len(ts)) for f in FRACTIONS]
    assert naive != expected


def test_start_time_offset_is_the_origin_of_times(media):
    info, times, frames = reference_frames(str(media["offset"]))
    assert info.start_time_s == pytest.approx(1.5)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert _indices(frames) == [2, 25, 47]
    assert times == pytest.approx([2 / 25, 1.0, 47 / 25], abs=1e-3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_gives_display_orientation(tmp_path, rotation):
    path = make_video(tmp_path / f"rot{rotation}.mp4", seconds=0.5, size=(160, 120), rotation=rotation)
    info = probe(str(path))
    assert info.rotation_deg == rotation
    assert (info.width_px, info.height_px) == ((120, 160) if rotation in (90, 270) else (160, 120))
    _, _, frames = reference_frames(str(path))
    assert frames[0].shape == (info.height_px, info.width_px, 3)
    # Undoing the counter-clockwise display rotation gives back the coded picture with its index band on top.
    assert _indices(frames, rotation) == [0, 6, 11]
    if shutil.which("ffmpeg"):  # ffmpeg's own auto-rotation agrees pixel for pixel
        ours = decode_clip(str(path), num_frames=1)[0]
        ref = ffmpeg_rgb24(path, "-frames:v", "1").reshape(ours.shape)
        assert np.abs(ref.astype(int) - ours.astype(int)).mean() < 2.0


def test_ten_bit_video_becomes_8_bit_rgb(media):
    info, _, frames = reference_frames(str(media["ten_bit"]))
    assert info.pix_fmt == "yuv420p10le"
    assert frames[1].dtype == np.uint8 and frames[1].shape == (120, 160, 3)
    assert _indices(frames) == [1, 12, 22]
    assert frames[1].max() > 200  # white index cells: the 10-bit range was scaled, not truncated


def test_odd_frame_size(media):
    info, _, frames = reference_frames(str(media["odd"]))
    assert (info.width_px, info.height_px) == (161, 121)
    assert frames[0].shape == (121, 161, 3)
    assert _indices(frames) == [1, 12, 22]


def test_max_side_px_downsizes_keeping_aspect(media):
    _, _, frames = reference_frames(str(media["cfr"]), max_side_px=80)
    assert frames[0].shape == (60, 80, 3)


def test_clip_window_inside_a_longer_video(media):
    path = str(media["long"])
    _, times, frames = reference_frames(path, start_s=2.0, end_s=4.0)
    assert _indices(frames) == [50, 72, 93]
    assert times == pytest.approx([50 / 24, 3.0, 93 / 24])
    # An end past the video is clamped to the video's end.
    info, times, _ = reference_frames(path, start_s=6.0, end_s=100.0)
    assert times[-1] == pytest.approx(int((6.0 + 0.95 * (info.duration_s - 6.0)) * 24) / 24)


@pytest.mark.parametrize("start, end", [(3.0, 3.0), (4.0, 2.0), (9.0, None), (-1.0, 2.0)])
def test_bad_time_range(media, start, end):
    with pytest.raises(VideoError) as err:
        reference_frames(str(media["long"]), start_s=start, end_s=end)
    assert err.value.reason == "bad_time_range"


def test_clip_too_short_for_three_distinct_frames(media):
    with pytest.raises(VideoError) as err:
        reference_frames(str(media["cfr"]), start_s=1.0, end_s=1.06)  # 2 frames long
    assert err.value.reason == "too_few_frames"


def test_uri_through_pyarrow_filesystem(media):
    uri = media["cfr"].resolve().as_uri()  # file:///...
    assert "://" in uri
    info, _, frames = reference_frames(uri)
    assert info.num_frames == 48 and _indices(frames) == [2, 24, 45]
    with pytest.raises(VideoError) as err:
        probe(uri + ".missing.mp4")
    assert err.value.reason == "missing_file"


@pytest.mark.parametrize(
    "name, make, reason",
    [
        *BAD_INPUTS,
        ("single.mp4", make_single_frame, "too_few_frames"),
        ("cut.mkv", make_truncated, "truncated"),  # opens, decodes 40 %, then the data ends
    ],
)
def test_bad_input_raises_video_error_with_reason(tmp_path, name, make, reason):
    assert_refused(reference_frames, tmp_path, name, make, reason)


def test_truncated_file_still_serves_clips_inside_its_decodable_part(tmp_path):
    path = make_truncated(tmp_path / "cut.mkv", fraction=0.4)
    _, _, frames = reference_frames(str(path), start_s=0.0, end_s=0.5)
    assert _indices(frames) == [0, 6, 11]


def test_video_error_survives_pickling():
    err = pickle.loads(pickle.dumps(VideoError("unreadable", "x.mp4 is broken")))
    assert (err.reason, err.detail) == ("unreadable", "x.mp4 is broken")


def test_decode_clip_resamples_by_timestamps(media):
    clip = decode_clip(str(media["long"]), start_s=1.0, end_s=3.0, fps=12.0)
    assert clip.shape == (24, 120, 160, 3)
    assert _indices(clip) == [24 + 2 * k for k in range(24)]
    fixed = decode_clip(str(media["long"]), start_s=7.5, fps=24.0, num_frames=20)
    assert len(fixed) == 20 and _indices(fixed)[-1] == 191  # past the end: the last frame repeats


def test_decode_clip_resize_and_center_crop(media):
    clip = decode_clip(str(media["cfr"]), fps=24.0, num_frames=4, size=(64, 64))
    assert clip.shape == (4, 64, 64, 3)
    # 160x120 covered at 64 px high is 85x64: a center crop keeps the middle of the index band.
    assert clip.dtype == np.uint8


def test_decode_clip_vfr(media):
    clip = decode_clip(str(media["vfr"]), fps=10.0)
    ts = np.array(frame_times(3.0, 24, vfr=True))
    got = _indices(clip)
    assert len(got) == int(probe(str(media["vfr"])).duration_s * 10 + 1e-6)
    for k, i in enumerate(got):
        dist = np.abs(ts - k / 10)
        assert dist[i] <= dist.min() + 2e-3  # the nearest frame (ties within the 1 ms timestamp rounding)


def test_write_video_pads_odd_sizes_for_420(tmp_path):
    frames = np.zeros((5, 33, 47, 3), np.uint8)
    frames[:, :, :10] = 255
    path = write_video(tmp_path / "odd.mp4", frames, fps=10)
    info = probe(str(path))
    assert (info.width_px, info.height_px) == (48, 34)
    assert info.num_frames == 5 and info.pix_fmt == "yuv420p"
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 8, 8), np.uint8))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ts_bframes_offset.ts", {"gop": 48, "bframes": 3, "start_time_s": 1.4}),  # seeks by timestamp, not keyframe
        ("vfr.mkv", {"gop": 48, "bframes": 3, "vfr": True}),  # Matroska loads its keyframe index lazily
        ("vp9.webm", {"codec": "libvpx-vp9", "pix_fmt": "yuv420p"}),
        ("mpeg4.avi", {"codec": "mpeg4", "pix_fmt": "yuv420p"}),
        ("long_gop.mov", {"gop": 250, "bframes": 3}),
        *OPEN_GOP_VIDEOS,
    ],
)
def test_containers_and_codecs(tmp_path, name, kwargs):
    path = make_video(tmp_path / name, seconds=6.0, fps=24, size=(96, 64), **kwargs)
    info, _, frames = reference_frames(str(path))
    ts = frame_times(6.0, 24, vfr=kwargs.get("vfr", False))
    assert _indices(frames) == [expected_index_at(ts, f * info.duration_s) for f in FRACTIONS]
    clip = decode_clip(str(path), start_s=2.0, end_s=2.5, fps=24.0)
    assert len(clip) == 12
    if not kwargs.get("vfr"):
        assert _indices(clip) == list(range(48, 60))


# --------------------------------------------------------------------------------------------------------------
# seek="keyframe": the keyframe at or before each target, exact frames where that keyframe is unusable


def _keyframe_times(path) -> list[float]:
    """Times (from the first frame) of the frames the decoder flags as keyframes, by decoding everything."""
    import av

    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        frames = [(f.pts, f.key_frame) for f in container.decode(vs)]
        tb = vs.time_base
    first = frames[0][0]
    return [float((pts - first) * tb) for pts, key in frames if key]


@pytest.fixture(scope="module")
def gop48(tmp_path_factory):
    # 4 s at 24 fps, a keyframe every 48 frames (0 s and 2 s), B-frames as in web uploads.
    return make_video(
        tmp_path_factory.mktemp("gop48") / "gop48.mp4", seconds=4.0, fps=24, size=(160, 120), gop=48, bframes=3
    )


def test_keyframe_mode_takes_keyframes_and_falls_back_where_a_keyframe_would_repeat(gop48):
    path = str(gop48)
    assert _keyframe_times(path) == [0.0, 2.0]
    _, exact_times, _ = reference_frames(path)
    assert exact_times == pytest.approx([4 / 24, 2.0, 91 / 24])
    stats: dict[str, int] = {}
    _, times, frames = reference_frames(path, seek="keyframe", stats=stats)
    # 5 % -> keyframe 0 s, 50 % -> keyframe 2 s; 95 % would take the 2 s keyframe again, so it is the exact frame.
    assert times == pytest.approx([0.0, 2.0, 91 / 24])
    assert _indices(frames) == [0, 48, 91]
    assert len({f.tobytes() for f in frames}) == 3


def test_keyframe_mode_decodes_only_the_keyframes_on_a_long_gop_clip(media):
    path = str(media["long"])  # 8 s, keyframes every 60 frames: 0, 2.5, 5, 7.5 s
    assert _keyframe_times(path) == [0.0, 2.5, 5.0, 7.5]
    exact_stats: dict[str, int] = {}
    reference_frames(path, stats=exact_stats)
    stats: dict[str, int] = {}
    _, times, frames = reference_frames(path, seek="keyframe", stats=stats)
    assert times == pytest.approx([0.0, 2.5, 7.5])  # targets 0.4, 4.0 and 7.6 s
    assert _indices(frames) == [0, 60, 180]
    # One frame per target (plus the B-frame reordering delay), against whole GOP prefixes in exact mode.
    assert stats["frames_decoded"] <= 6 < exact_stats["frames_decoded"] / 4


def test_keyframe_before_the_clip_start_falls_back_to_the_exact_frame(gop48):
    path = str(gop48)
    # Clip [1, 4) s starts mid-GOP: 5 % (1.15 s) has the 0 s keyframe, outside the clip, so it gets the exact frame;
    # 50 % (2.5 s) gets the 2 s keyframe; 95 % would repeat it.
    _, times, frames = reference_frames(path, start_s=1.0, seek="keyframe")
    assert _indices(frames) == [27, 48, 92]
    assert times == pytest.approx([27 / 24, 2.0, 92 / 24])
    # Clip [2.5, 4) s: every target's keyframe (2 s) is before the clip, so the result is exact mode's.
    exact = reference_frames(path, start_s=2.5)
    snapped = reference_frames(path, start_s=2.5, seek="keyframe")
    assert snapped[1] == exact[1] == pytest.approx([61 / 24, 3.25, 94 / 24])
    for a, b in zip(snapped[2], exact[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_keyframe_mode_frames_equal_the_exact_decode_of_their_times(media):
    path = str(media["long"])
    everything = list(decode_all_frames(path))
    _, times, frames = reference_frames(path, start_s=1.0, end_s=7.0, seek="keyframe", max_side_px=0)
    assert times == pytest.approx([31 / 24, 2.5, 5.0])  # 1.3 s is before the 2.5 s keyframe: exact frame
    for t, f in zip(times, frames, strict=True):
        np.testing.assert_array_equal(f, everything[int(round(t * 24))])
        # The same frame as exact mode's at that very time.
        _, (t_exact,), (f_exact,) = reference_frames(path, start_s=t, end_s=t + 1 / 24, fractions=(0.0,))
        assert t_exact == pytest.approx(t)
        np.testing.assert_array_equal(f, f_exact)


def test_exact_is_the_default_seek_mode(gop48):
    default = reference_frames(str(gop48))
    exact = reference_frames(str(gop48), seek="exact")
    assert default[1] == exact[1]


@pytest.mark.parametrize("seek", ["keyframes", "fast", "", "KEYFRAME"])
def test_bad_seek_mode_is_a_value_error_naming_the_choices(gop48, seek):
    with pytest.raises(ValueError, match="'exact', 'keyframe'"):
        reference_frames(str(gop48), seek=seek)


def test_keyframe_mode_still_reports_a_truncated_tail(tmp_path):
    # Keyframes every 0.5 s, data ends at 2.4 s of 4 s. Targets 0.2, 1.2 and 3.8 s: the last one's keyframe (2 s) is
    # in the decodable part, but the data does not reach 3.8 s, as exact mode reports.
    path = make_truncated(tmp_path / "cut.mkv", fraction=0.6, seconds=4.0)
    for seek in ("exact", "keyframe"):
        with pytest.raises(VideoError) as err:
            reference_frames(str(path), fractions=(0.05, 0.3, 0.95), seek=seek)
        assert err.value.reason == "truncated"
    _, times, _ = reference_frames(str(path), start_s=0.0, end_s=2.0, seek="keyframe")
    assert times == pytest.approx([0.0, 1.0, 1.5])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ts_bframes_offset.ts", {"gop": 48, "bframes": 3, "start_time_s": 1.4}),  # seeks by timestamp: exact frames
        ("vfr.mkv", {"gop": 48, "bframes": 3, "vfr": True}),
        ("vp9.webm", {"codec": "libvpx-vp9", "pix_fmt": "yuv420p", "gop": 48}),
        ("mpeg4.avi", {"codec": "mpeg4", "pix_fmt": "yuv420p", "gop": 48}),
        *OPEN_GOP_VIDEOS,
    ],
)
@pytest.mark.parametrize("window", [(None, None), (1.3, 5.5)])
def test_keyframe_mode_across_containers(tmp_path, name, kwargs, window):
    path = make_video(tmp_path / name, seconds=6.0, fps=24, size=(96, 64), **kwargs)
    keyframes = _keyframe_times(path)
    everything = list(decode_all_frames(str(path)))
    info, exact_times, _ = reference_frames(str(path), *window)
    _, times, frames = reference_frames(str(path), *window, seek="keyframe")
    a = window[0] or 0.0
    b = min(window[1] or info.duration_s, info.duration_s)
    targets = [a + f * (b - a) for f in FRACTIONS]
    assert times == sorted(times) and len(set(times)) == 3
    assert all(a - 1e-6 <= t < b for t in times)
    snapped = 0
    for t, target, t_exact, f in zip(times, targets, exact_times, frames, strict=True):
        is_key = any(abs(t - k) < 1e-3 for k in keyframes)
        assert t == pytest.approx(t_exact) or (is_key and t <= target + 1e-6)
        snapped += is_key and t != pytest.approx(t_exact)
        np.testing.assert_array_equal(f, everything[read_index(f)])
    if not name.endswith(".ts"):
        assert snapped >= 2  # a keyframe at least every 2 s: most targets are snapped
