"""`alchemist eval` and `alchemist benchmark prepare`: MSRVTT-Personalization preparation and scoring.

See docs/eval.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from pipelines.common import exit_on, profile_settings, ray_address_option, set_option

T = TypeVar("T")

benchmark_app = typer.Typer(
    help="Build the MSRVTT-Personalization benchmark from its released annotations.", no_args_is_help=True
)


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    state: dict[str, Any] = {}

    def update(advance: int, total: int) -> None:
        if "task" not in state:
            state["task"] = progress.add_task(description, total=total)
        progress.update(state["task"], advance=advance)

    return progress, update


def _with_progress(description: str, work: Callable[[Callable[[int, int], None]], T]) -> T:
    """``work(update)`` under a progress bar; bad input (a ValueError) ends the command like any other's."""
    progress, update = _progress(description)
    with exit_on(ValueError), progress:
        return work(update)


def eval_cmd(
    videos: Path = typer.Argument(..., help="Folder of generated videos named <clip_id>.mp4 (benchmark clip ids)."),
    benchmark: Path = typer.Option(
        ..., "--benchmark", "-b", help="Prepared benchmark (`alchemist benchmark prepare`) or any curated run."
    ),
    mode: str = typer.Option("subject", "--mode", "-m", help="subject | face | multi_subject"),
    metrics: str = typer.Option(
        "", "--metrics", help="Comma list of text,video,subject,face,dynamic (default: the mode's four)."
    ),
    num_frames: int = typer.Option(0, "--num-frames", help="Score only the first N frames (0 = all frames)."),
    profile: str = typer.Option("offline", "--profile", "-p", help="Models: paper | offline | tiny."),
    set_: list[str] = set_option("Override a model setting, e.g. --set clip_model=DIR."),
    output: Path = typer.Option(None, "--output", "-o", help="Results folder (default VIDEOS/eval_<mode>)."),
    num_workers: int = typer.Option(0, "--num-workers", help="Ray actors (0 = score in this process)."),
    ray_address: str = ray_address_option(),
    chunk_size: int = typer.Option(8, "--chunk-size", help="Videos per scoring call and per resumable part."),
    only_generated: bool = typer.Option(
        False, "--only-generated", help="Score only clips that have a generated video (not a benchmark number)."
    ),
    method: str = typer.Option(None, "--method", help="Row name in the printed table (default: the folder name)."),
) -> None:
    """Score generated videos on MSRVTT-Personalization (Text-S, Vid-S, Subj-S / Face-S, Dync-D).

    Writes OUTPUT/scores.parquet (one row per video), OUTPUT/summary.json and prints the paper-style table. A
    missing or unreadable video scores 0 and is listed by name. Re-running the same command resumes.
    """
    from rich.console import Console

    from alchemist_eval.runner import run_eval

    console = Console()
    summary = _with_progress(
        "scoring",
        lambda update: run_eval(
            videos,
            benchmark,
            mode=mode,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()] or None,
            num_frames=num_frames or None,
            **profile_settings(profile, set_),
            output=output,
            num_workers=num_workers,
            ray_address=ray_address,
            chunk_size=chunk_size,
            only_generated=only_generated,
            progress=update,
            log=lambda s: console.print(f"[yellow]{s}"),
        ),
    )
    if method:
        summary["method"] = method
    _report(console, summary)


def _report(console: Any, summary: dict[str, Any]) -> None:
    from alchemist_eval.runner import format_table

    console.print(format_table(summary))
    if summary["num_missing"]:
        names = ", ".join(f"{m['clip_id']} ({m['status']})" for m in summary["missing"][:20])
        more = "" if summary["num_missing"] <= 20 else f" and {summary['num_missing'] - 20} more"
        console.print(
            f"[yellow]{summary['num_missing']} generated video(s) missing or unreadable, scored 0: {names}{more}"
        )
    if summary.get("num_left_out"):
        console.print(
            f"[yellow]--only-generated: {summary['num_left_out']} of {summary['num_clips_in_mode']} clips "
            "had no generated video and were left out; these are NOT benchmark numbers"
        )
    if summary.get("random_models"):
        console.print(
            f"[yellow]random models: {', '.join(summary['random_models'])} (scores not comparable to the paper)"
        )
    console.print(f"per-video scores: {summary['output']}/scores.parquet   summary: {summary['output']}/summary.json")


def prepare_cmd(
    annotations: Path = typer.Option(..., "--annotations", help="Released annotation zip or its unpacked folder."),
    videos: Path = typer.Option(..., "--videos", help="Folder of the MSR-VTT videos (video0.mp4 ...)."),
    output: Path = typer.Option(..., "--output", "-o", help="Benchmark folder to write (resumable)."),
    profile: str = typer.Option(
        "offline", "--profile", "-p", help="Models for backgrounds and GT embeddings: paper | offline | tiny."
    ),
    set_: list[str] = set_option("Override a model setting, e.g. --set dino_model=DIR."),
    shard_size: int = typer.Option(16, "--shard-size", help="Clips per committed shard."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Precompute GT embeddings."),
) -> None:
    """Cut the clips, extract GT frames/crops/faces, inpaint backgrounds, embed the GT and write the mode lists."""
    from rich.console import Console

    from alchemist_eval.prepare import prepare_benchmark

    console = Console()
    info = _with_progress(
        "preparing",
        lambda update: prepare_benchmark(
            annotations,
            videos,
            output,
            **profile_settings(profile, set_),
            shard_size=shard_size,
            embeddings=embeddings,
            progress=update,
        ),
    )
    console.print(json.dumps({k: info[k] for k in ("num_annotations", "num_clips", "num_rejects", "modes")}))
    console.print(
        f"benchmark written to {output} (tables clips, entities, backgrounds, gt_frames, conditioning, "
        "gt_embeddings; rejects lists clips that could not be prepared)"
    )


def demo_evaluate(generated_dir: Path, curated_dir: Path, out_dir: Path) -> dict:
    """The demo's step: score the generated clips (``<clip_id>.mp4``) against the curated sample, offline profile.

    Only clips that have a generated video are scored (``only_generated``), in the mode that holds most of them.
    """
    from rich.console import Console

    from alchemist_eval.benchmark import Benchmark
    from alchemist_eval.runner import find_generated, run_eval

    bench = Benchmark.load(curated_dir)
    modes = {
        m: sum(find_generated(Path(generated_dir), c) is not None for c in bench.clip_ids(m))
        for m in ("subject", "multi_subject", "face")
    }
    mode = max(modes, key=lambda m: modes[m])
    if modes[mode] == 0:
        raise ValueError(f"no video in {generated_dir} is named after a clip id of {curated_dir}")
    console = Console()
    summary = run_eval(
        generated_dir,
        curated_dir,
        mode=mode,
        profile="offline",
        output=out_dir,
        only_generated=True,
        log=lambda s: console.print(f"[yellow]{s}"),
    )
    summary["method"] = "Video Alchemist (demo)"
    _report(console, summary)
    return summary


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    benchmark_app.command("prepare")(prepare_cmd)
    app.add_typer(benchmark_app, name="benchmark")
