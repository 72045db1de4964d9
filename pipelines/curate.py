"""`alchemist curate | query | stats`: run the curation pipeline and look at its tables."""

from __future__ import annotations

import json
import sys

import typer

from pipelines.common import exit_on, profile_settings, ray_address_option, set_option

PROFILE_HELP = "Model profile: offline (embedded default, real PyPI models + announced random ones), paper, tiny."


def curate_cmd(
    manifest: str = typer.Argument(
        ..., help="JSONL, CSV or Parquet with columns video, caption[, start_s, end_s, clip_id] (a path or a URI)."
    ),
    output: str = typer.Option(
        ..., "--output", "-o", help="Run folder: a path, s3://bucket/prefix or gs://... (created; re-running resumes)."
    ),
    profile: str = typer.Option("offline", "--profile", "-p", help=PROFILE_HELP),
    ray_address: str = ray_address_option(),
    limit: int = typer.Option(None, "--limit", help="Only the first N manifest rows."),
    num_workers: int = typer.Option(
        1, "--num-workers", "-w", help="Largest actor pool per stage group (Ray runner; a stage's max_workers wins)."
    ),
    runner: str = typer.Option("ray", "--runner", help="ray (default) or local (in-process, for debugging)."),
    set_: list[str] = set_option("Override a profile field, e.g. --set grounding.batch_size=16."),
) -> None:
    """Curate captioned videos into Parquet reference tables (clips, entities, backgrounds, rejects, shots)."""
    from alchemist_data.runner import CurateOptions, curate

    with exit_on(ValueError, FileNotFoundError):
        opts = CurateOptions(
            manifest=str(manifest),
            output=str(output),
            **profile_settings(profile, set_),
            runner=runner,
            ray_address=ray_address,
            num_workers=num_workers,
            limit=limit,
        )
        info = curate(opts)
    c = info.get("counts", {})
    typer.echo(
        f"done in {info['elapsed_s']:.1f}s: {c.get('clips', 0)} clips, {c.get('entities', 0)} entity rows, "
        f"{c.get('backgrounds', 0)} backgrounds, {c.get('rejects', 0)} rejects, {c.get('shots', 0)} shots "
        f"({info['num_shards_skipped']} of {info['num_shards']} shards were already done)"
    )
    if c.get("rejects"):
        from alchemist_data.catalog import query

        reasons = query(output, "SELECT stage, reason, count(*) AS n FROM rejects GROUP BY 1, 2 ORDER BY n DESC")
        typer.echo("rejects: " + ", ".join(f"{r['stage']}/{r['reason']} {r['n']}" for r in reasons.to_pylist()))
    if info.get("has_random_models"):
        typer.secho("note: grounding/segmentation used RANDOM weights (see run.json)", fg="yellow")
    typer.echo(f"tables: {output}/{{clips,entities,backgrounds,rejects,shots}}/*.parquet  run: {output}/run.json")
    typer.echo(f'query:  alchemist query {output} "SELECT category, count(*) FROM entities GROUP BY 1"')


def query_cmd(
    run_dir: str = typer.Argument(..., help="A curated run folder (a path or s3://..., gs://...)."),
    sql: str = typer.Argument(..., help="DuckDB SQL over the views clips, entities, backgrounds, rejects."),
    fmt: str = typer.Option("table", "--format", help="table | json | csv"),
    limit: int = typer.Option(50, "--max-rows", help="Rows to print in table format."),
) -> None:
    """Run SQL against a curated run with DuckDB."""
    from alchemist_data.catalog import query

    with exit_on(ValueError):
        result = query(run_dir, sql)
    rows = [{k: _printable(v) for k, v in r.items()} for r in result.to_pylist()]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=1, default=str))
    elif fmt == "csv":
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=result.column_names)
        w.writeheader()
        w.writerows(rows)
    else:
        _print_table(result.column_names, rows[:limit], title=f"{result.num_rows} rows")


def stats_cmd(run_dir: str = typer.Argument(..., help="A curated run folder (a path or s3://..., gs://...).")) -> None:
    """Counts per category, reject reasons, mask-area and score distributions."""
    from alchemist_data.catalog import stats

    with exit_on(ValueError):
        sections = stats(run_dir)
    for title, rows in sections.items():
        if rows:
            _print_table(list(rows[0].keys()), rows, title=title)
        else:
            typer.echo(f"{title}: none")


def _printable(v: object) -> object:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v


def _print_table(columns: list[str], rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(r[c]) for c in columns])
    Console(width=160).print(t)


def register(app: typer.Typer) -> None:
    app.command("curate")(curate_cmd)
    app.command("query")(query_cmd)
    app.command("stats")(stats_cmd)
