"""`alchemist demo`: the whole product end to end on the embedded default (offline profile, synthetic corpus)."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def run_demo(output: Path, num_clips: int = 24, num_workers: int = 2) -> dict:
    from rich.console import Console

    from alchemist_data.runner import CurateOptions, curate
    from alchemist_data.sample_data import write_sample_corpus
    from pipelines.curate import stats_cmd

    console = Console()
    t0 = time.time()
    output.mkdir(parents=True, exist_ok=True)
    console.rule("1/4 sample data")
    manifest = write_sample_corpus(output / "sample", num_clips=num_clips, seed=0)
    console.print(f"wrote {num_clips} synthetic captioned clips: {manifest}")

    console.rule("2/4 curate (offline profile, local Ray)")
    curated = output / "curated"
    info = curate(
        CurateOptions(manifest=str(manifest), output=str(curated), profile="offline", num_workers=num_workers)
    )
    stats_cmd(curated)

    console.rule("3/4 train the tiny model on the curated sample, then generate from curated references")
    from pipelines.train import demo_train_and_generate

    generated = demo_train_and_generate(curated, output / "model")

    console.rule("4/4 evaluate the generated clip against the curated sample (offline profile)")
    from pipelines.evaluate import demo_evaluate

    summary = demo_evaluate(output / "model" / "generated", curated, output / "eval")

    console.rule(f"done in {time.time() - t0:.0f}s")
    console.print(f"curated tables: {curated}/{{clips,entities,backgrounds,rejects}}/*.parquet (run.json beside them)")
    console.print(f'query them:     alchemist query {curated} "SELECT entity_word, count(*) FROM entities GROUP BY 1"')
    console.print(f"or in Python:   duckdb.sql(\"SELECT * FROM '{curated}/entities/*.parquet'\")")
    console.print(f"model run:      {output / 'model' / 'train'}  generated: {output / 'model' / 'generated'}")
    console.print(f"eval scores:    {output / 'eval'}")
    console.print(
        "[yellow]The offline profile uses random GroundingDINO/SAM/CLIP/DINO and a tiny model trained for "
        "seconds: these numbers exercise the pipeline, they are not benchmark results."
    )
    return {"curated": curated, "curate_info": info, "generated": generated, "eval": summary}


def demo_cmd(
    output: Path = typer.Option(Path("demo_out"), "--output", "-o", help="Folder for everything the demo writes."),
    num_clips: int = typer.Option(24, "--num-clips", help="Synthetic clips to generate and curate."),
    num_workers: int = typer.Option(2, "--num-workers", help="Ray actors for curation."),
) -> None:
    """Sample data -> curate (offline) -> stats -> train tiny -> generate -> evaluate, end to end."""
    run_demo(output, num_clips=num_clips, num_workers=num_workers)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
