"""`alchemist report RUN --output DIR`: a static HTML report of a curated run, a benchmark folder or an eval output."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.common import exit_on


def report_cmd(
    run: str = typer.Argument(
        ..., help="A curated run, a benchmark folder or an `alchemist eval` output (path or URI)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for index.html and its img/ (created)."),
    max_clips: int = typer.Option(
        None,
        "--max-clips",
        help="Clips (or videos) shown with pictures, sampled deterministically by md5 of the clip id (default 100).",
    ),
) -> None:
    """Write a self-contained HTML report (opens offline): counts, settings, distributions, rejects and clips."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from alchemist_data.report import DEFAULT_MAX_CLIPS, build_report

    progress = Progress(TextColumn("drawing clips"), BarColumn(), MofNCompleteColumn(), transient=True)
    state: dict[str, int] = {}

    def update(done: int, total: int) -> None:
        if "task" not in state:
            state["task"] = progress.add_task("report", total=total)
        progress.update(state["task"], completed=done)

    with exit_on(ValueError), progress:
        info = build_report(
            run, output, max_clips=DEFAULT_MAX_CLIPS if max_clips is None else max_clips, progress=update
        )
    typer.echo(
        f"{info['kind']} report: {info['num_clips_shown']} of {info['num_clips']} clips shown, "
        f"{info['num_images']} pictures -> {info['index']}"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
