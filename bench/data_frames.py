"""Reference-frame extraction (3 frames, accurate seek) against decoding the whole clip, 720p H.264; and the full
low-resolution decode for shot detection (:func:`_lowres_rows`).

Issue 2 §4 / notes/anchors.md §5.1: on long-GOP video, three frames at 5/50/95 % must cost at least 3x less than
decoding every frame. Both are measured in the same run, on the same files, interleaved, with one decode thread
each (curation runs one worker per core). The unit is CPU milliseconds of this process per clip: decoding is
single-threaded, so CPU time is the work done and stays meaningful when other jobs share the machine (wall time is
in the note).

Clips are encoded here with libx264 (veryfast, CRF 23) from a drifting texture with camera-like grain, which gives
the 3-4 Mb/s of typical 720p uploads, at a fixed GOP of 250 or 30 frames. "B-frames" means x264's usual structure
(3 B-frames, B-pyramid); phones often record without B-frames, which is the third case.

Exact frames have a floor: every reference frame from the keyframe before a target up to the target must be decoded.
In a 10 s, 30 fps clip with GOP 250 the 50 % target is frame 150 of the first GOP, so >= 50 % of the P-frames are
decoded whatever the method; the anchors' measurement (§5.1) used 20 s clips, where the same method decodes ~25 %.
Both lengths are reported.

Long-GOP clips also get a row for ``seek="keyframe"`` (anchors §5.1: snapping to keyframes is the largest CPU saving):
each target takes the keyframe at or before it, so only that frame is decoded, unless the keyframe is before the
clip or repeats the previous pick (then the exact frame). Its baseline is decode-all from the same interleaved run;
the note gives the exact-mode figure of that run too. How much it saves depends on how many targets land in a GOP
of their own: with GOP 250 at 30 fps (8.3 s) the 20 s clip has one keyframe per target, the 10 s clip's 50 % target
shares the first GOP with the 5 % one and stays exact.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import interleaved_medians, print_rows, row

# x264 veryfast CRF 23 over a drifting texture with camera-like grain: the 3-4 Mb/s of typical 720p uploads
UPLOAD_720P = {"size": (1280, 720), "preset": "veryfast", "crf": 23, "seed": 1, "grain": 12}
SCALING_NOTE = "1 decode thread; the scaling cost is the difference to the baseline"


def _make_clip(path: Path, seconds: float, fps: float, gop: int, bframes: int) -> Path:
    from tests.media import make_video

    return make_video(path, seconds=seconds, fps=fps, gop=gop, bframes=bframes, **UPLOAD_720P)


def _measure(fns: dict[str, object], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU ms, wall ms) per function, runs interleaved so load changes hit both alike."""
    for fn in fns.values():
        fn()  # warm-up: page cache, decoder init
    medians = interleaved_medians(fns, repeats)
    return {k: (cpu_s * 1000, wall_s * 1000) for k, (cpu_s, wall_s) in medians.items()}


def run(quick: bool) -> list[dict]:
    from alchemist_data.media import decode_all_frames, probe, reference_frames

    fps = 30.0
    # (seconds, GOP, B-frames)
    cases = [(10.0, 250, 3), (20.0, 250, 3), (10.0, 30, 3), (10.0, 250, 0)]
    repeats = 3
    if quick:
        cases = [(20.0, 250, 3), (6.0, 30, 3)]
        repeats = 1
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="alchemist-bench-frames-") as tmp:
        for seconds, gop, bframes in cases:
            clip = _make_clip(Path(tmp) / f"s{seconds:g}-gop{gop}-b{bframes}.mp4", seconds, fps, gop, bframes)
            info = probe(str(clip))
            stats: dict[str, int] = {}

            def refs(clip=clip, stats=stats) -> None:
                _, _, frames = reference_frames(str(clip), stats=stats)
                assert len(frames) == 3 and frames[0].shape == (720, 1280, 3)

            def full(clip=clip, info=info) -> None:
                n = sum(1 for _ in decode_all_frames(str(clip)))
                assert n >= info.num_frames - 1

            long_gop = gop == 250
            key_stats: dict[str, int] = {}
            key_times: list[float] = []

            def key_refs(clip=clip, stats=key_stats, out=key_times) -> None:
                _, times, frames = reference_frames(str(clip), stats=stats, seek="keyframe")
                assert len(frames) == 3 and frames[0].shape == (720, 1280, 3)
                out[:] = times

            fns = {"refs": refs, "full": full}
            if long_gop:
                fns["key"] = key_refs
            timing = _measure(fns, repeats)
            (ref_cpu, ref_wall), (full_cpu, full_wall) = timing["refs"], timing["full"]
            ratio = full_cpu / ref_cpu
            bitrate = os.path.getsize(clip) * 8 / 1e6 / info.duration_s
            note = (
                f"{seconds:g} s, {info.num_frames} frames {info.width_px}x{info.height_px} @ {info.fps:g} fps, "
                f"{bitrate:.1f} Mb/s, {bframes} B-frames; decoded {stats['frames_decoded']} frames, "
                f"{stats['seeks']} seek(s); {ratio:.1f}x cheaper (wall {ref_wall:.0f} vs {full_wall:.0f} ms); "
                "1 decode thread"
            )
            goal = ">= 3x cheaper than full decode (anchors §5.1 clip: 20 s)" if gop == 250 and bframes else None
            label = f"{seconds:g} s, GOP {gop}" + ("" if bframes else ", no B-frames")
            vs_decode_all = {"baseline": round(full_cpu, 1), "baseline_name": "decode every frame to RGB"}
            metric = f"CPU ms per clip, 3 ref frames, {label}"
            rows.append(
                row("data/reference_frames", metric, round(ref_cpu, 1), "ms", note, goal=goal, **vs_decode_all)
            )
            if long_gop:
                key_cpu, key_wall = timing["key"]
                snapped = ", ".join(f"{t:.2f}" for t in key_times)
                note = (
                    f"{seconds:g} s, {info.num_frames} frames @ {info.fps:g} fps, {bframes} B-frames; frames at "
                    f"{snapped} s (keyframe at or before each 5/50/95 % target, exact where it would be outside the "
                    f"clip or repeat); decoded {key_stats['frames_decoded']} frames, {key_stats['seeks']} seek(s); "
                    f"{full_cpu / key_cpu:.1f}x cheaper than decode-all, {ref_cpu / key_cpu:.1f}x cheaper than exact "
                    f"({ref_cpu:.0f} ms, same run; wall {key_wall:.0f} vs {full_wall:.0f} ms); 1 decode thread"
                )
                metric = f"CPU ms per clip, 3 ref frames keyframe-snapped, {label}"
                rows.append(row("data/reference_frames", metric, round(key_cpu, 1), "ms", note, **vs_decode_all))
    rows.extend(_lowres_rows(quick))
    return rows


def _lowres_rows(quick: bool) -> list[dict]:
    """Every frame at 48x27 RGB (TransNetV2's input, issue 8) against decoding alone, both backends, 720p H.264.

    Wall frames/s with FFmpeg's threads (what a shots stage gets on an idle machine) and CPU ms per frame with one
    decoding thread (the work, which stays comparable when other jobs share the cores). The 240-frame clip is the
    one of the issue's measurement (8 s at 30 fps, x264 veryfast CRF 23 with grain, B-frames).
    """
    import av

    from alchemist_data.media import decode_all_frames_lowres

    repeats = 2 if quick else 5
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="alchemist-bench-lowres-") as tmp:
        clip = _make_clip(Path(tmp) / "lowres-720p.mp4", 8.0, 30.0, 250, 3)

        def decoded(threads: int):
            """The clip's frames from PyAV with ``threads`` decoding threads (0: FFmpeg's choice)."""
            with av.open(str(clip)) as container:
                vs = container.streams.video[0]
                vs.thread_type, vs.thread_count = "AUTO", threads
                yield from container.decode(vs)

        def decode_only(threads: int) -> int:
            return sum(1 for _ in decoded(threads))

        def per_frame_to_ndarray(threads: int) -> int:
            # The first measurement: PyAV's own per-frame scaling (a new swscale context every frame).
            return sum(1 for f in decoded(threads) if f.to_ndarray(format="rgb24", width=48, height=27).size)

        def lowres(backend: str, threads: int) -> int:
            frames, _, _ = decode_all_frames_lowres(str(clip), backend=backend, threads=threads)
            assert frames.shape[1:] == (27, 48, 3)
            return len(frames)

        paths = {
            "decode only (PyAV)": decode_only,
            "PyAV frame.to_ndarray(width=48, height=27)": per_frame_to_ndarray,
            "decode_all_frames_lowres backend=pyav": lambda t: lowres("pyav", t),
            "decode_all_frames_lowres backend=decord": lambda t: lowres("decord", t),
        }
        walls: dict[str, list[float]] = {k: [] for k in paths}
        cpus: dict[str, list[float]] = {k: [] for k in paths}
        for fn in paths.values():
            fn(0)  # warm-up: page cache, decoder init
        for _ in range(repeats):  # interleaved, so load changes hit every path alike
            for name, fn in paths.items():
                w0 = time.perf_counter()
                n = fn(0)
                walls[name].append(n / (time.perf_counter() - w0))
                c0 = time.process_time()
                n = fn(1)
                cpus[name].append((time.process_time() - c0) * 1000 / n)
        wall = {k: statistics.median(v) for k, v in walls.items()}
        cpu = {k: statistics.median(v) for k, v in cpus.items()}
        base = "decode only (PyAV)"
        for name in paths:
            if name == base:
                continue
            note = (
                f"240 frames 1280x720 H.264 @ 30 fps; CPU {cpu[name]:.2f} ms/frame with 1 decode thread vs "
                f"{cpu[base]:.2f} decoding alone; {os.cpu_count()} cores; median of {repeats}"
            )
            # the same paths measured two ways: (metric, its median per path, digits, unit, baseline name, note)
            for metric, median, digits, unit, baseline_name, row_note in (
                ("frames/s", wall, 1, "frames/s", "decode only, PyAV threaded", note),
                ("CPU ms per frame", cpu, 3, "ms", "decode only, 1 thread", SCALING_NOTE),
            ):
                rows.append(
                    row(
                        "data/lowres_decode",
                        f"{metric}, 48x27 RGB, {name}",
                        round(median[name], digits),
                        unit,
                        row_note,
                        baseline=round(median[base], digits),
                        baseline_name=baseline_name,
                    )
                )
    return rows


if __name__ == "__main__":
    import sys

    print_rows(run(quick="--quick" in sys.argv), metric_width=64, baseline_width=8)
