"""Shot detection: frames/s of the shots stage's work (full 48x27 decode + TransNetV2 with its real weights) against
the decode alone, on the same generated multi-shot videos, one CPU thread each (curation runs one worker per core).

Throughput is frames per CPU second of this process, so it stays meaningful when other jobs share the machine (wall
time is in the note). The videos are hard cuts between textured moving scenes (``tests.media.make_multishot_video``)
at 640x360 and 1280x720, 24 fps. A second row per size gives TransNetV2 alone on the decoded frames; the note of
the first says whether the cuts were found where they are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import interleaved_medians, print_rows, row


def run(quick: bool) -> list[dict]:
    import torch

    from alchemist_data.models.shots import TransNetShots
    from alchemist_data.stages.shots import _lowres_frames
    from tests.media import make_multishot_video

    torch.set_num_threads(1)
    fps = 24.0
    shots = (60, 60, 60) if quick else (80, 100, 90, 70)
    sizes = [(640, 360)] if quick else [(640, 360), (1280, 720)]
    repeats = 1 if quick else 3
    model = TransNetShots(threads=1)
    model.setup()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="alchemist-bench-shots-") as tmp:
        for w, h in sizes:
            video = str(make_multishot_video(Path(tmp) / f"multi-{w}x{h}.mp4", shots, fps=fps, size=(w, h)))
            n = sum(shots)
            found: list[int] = []

            def decode(video=video, n=n) -> None:
                frames, _ = _lowres_frames(video)
                assert len(frames) == n

            def detect(video=video, out=found) -> None:
                frames, _ = _lowres_frames(video)
                scores = model.transition_scores([frames])[0]
                out[:] = [int(s) for s, _ in TransNetShots.scenes(scores, 0.5)]

            frames, _ = _lowres_frames(video)
            model.transition_scores([frames[:100]])  # warm-up: page cache, decoder and kernel init
            timing = interleaved_medians(
                {"decode": decode, "detect": detect, "model": lambda frames=frames: model.transition_scores([frames])},
                repeats,
            )
            (dec_cpu, dec_wall), (det_cpu, det_wall), (mod_cpu, mod_wall) = (
                timing["decode"],
                timing["detect"],
                timing["model"],
            )
            cuts = [sum(shots[:k]) for k in range(len(shots))]
            exact = all(abs(a - b) <= 1 for a, b in zip(found, cuts, strict=False)) and len(found) == len(cuts)
            label = f"{w}x{h}, {n} frames, {len(shots)} shots"
            rows.append(
                row(
                    "data/shots",
                    f"frames/s, decode 48x27 + TransNetV2, {label}",
                    round(n / det_cpu, 1),
                    "frames/s",
                    f"per CPU second, 1 thread; wall {n / det_wall:.1f} vs {n / dec_wall:.1f} frames/s; shots "
                    f"start at {found} (true {cuts}: {'found' if exact else 'MISSED'})",
                    baseline=round(n / dec_cpu, 1),
                    baseline_name="decode to 48x27 alone",
                )
            )
            rows.append(
                row(
                    "data/shots",
                    f"frames/s, TransNetV2 alone (decoded frames), {label}",
                    round(n / mod_cpu, 1),
                    "frames/s",
                    f"per CPU second, 1 thread; wall {n / mod_wall:.1f} frames/s",
                )
            )
    return rows


if __name__ == "__main__":
    import sys

    print_rows(run(quick="--quick" in sys.argv), metric_width=72)
