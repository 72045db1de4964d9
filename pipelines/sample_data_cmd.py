"""`alchemist sample-data DIR`: a small synthetic captioned video corpus (for the demo, tests and first tries)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.common import exit_on


def sample_data_cmd(
    out_dir: Path = typer.Argument(..., help="Folder to write videos/ and manifest.jsonl into (created if missing)."),
    num_clips: int = typer.Option(24, "--num-clips", "-n", min=1, help="How many clips to make."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same clips and captions."),
    width: int = typer.Option(320, "--width", min=32, help="Frame width in pixels."),
    height: int = typer.Option(240, "--height", min=32, help="Frame height in pixels."),
    seconds: float = typer.Option(2.0, "--seconds", min=0.2, help="Length of each clip in seconds."),
    fps: float = typer.Option(24.0, "--fps", min=1.0, help="Frames per second."),
) -> None:
    """Write NUM_CLIPS synthetic H.264 clips (moving shapes on textured backgrounds) and a manifest.jsonl.

    Every caption names one singular human or animal subject, objects and a background, e.g. "A woman in a red coat
    carries a small blue box across a sunny park.", so the curation pipeline has something to find. Then run:

        alchemist curate OUT_DIR/manifest.jsonl --output curated --profile offline
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alchemist_data.sample_data import write_sample_corpus

    with (
        exit_on(ValueError, OSError),
        Progress(TextColumn("sample clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar,
    ):
        task = bar.add_task("clips", total=num_clips)
        manifest = write_sample_corpus(
            out_dir,
            num_clips=num_clips,
            seed=seed,
            size=(width, height),
            seconds=seconds,
            fps=fps,
            on_clip=lambda done, total: bar.update(task, completed=done),
        )
    typer.echo(f"wrote {num_clips} clips and {manifest}")
    typer.echo(f"next: alchemist curate {manifest} --output {Path(out_dir) / 'curated'} --profile offline")


def register(app: typer.Typer) -> None:
    app.command("sample-data")(sample_data_cmd)
