"""`alchemist encode`: precompute the training inputs (VAE latents, text embeddings) of a curated run.

A Ray Data job like curation: the work table has one row per (clip, target size), grouped by the clip's curated
shard; ``alchemist_model.latents.LatentEncoder`` runs in an actor pool (one GPU each on a GPU cluster) or
in-process (``--runner local``); each shard is committed atomically by the curation writer as soon as its rows are
back, so a re-run of the same command skips finished shards and a changed config is refused.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from pipelines.common import exit_on, ray_address_option, set_option


@dataclass
class EncodeOptions:
    curated: str
    output: str
    profile: str = "tiny"
    overrides: list[str] = field(default_factory=list)
    runner: str = "ray"  # ray | local
    ray_address: str | None = None
    num_workers: int = 1


def local_path(uri: str, what: str) -> Path:
    """A local path (or file:// URI). The encode output also holds the encoders (``save_pretrained`` folders), which
    are written with local file APIs, so an object-store output is refused with a clear error."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid, or a store that cannot be reached
        raise ValueError(f"{what} {uri!r}: not a usable path or filesystem URI ({err})") from err
    if not isinstance(fs, pafs.LocalFileSystem):
        raise ValueError(
            f"{what} {uri!r}: encode reads and writes local (or mounted) folders, because the saved "
            f"encoders are local model folders; got a {fs.type_name} filesystem"
        )
    return Path(path)


def encode_config(profile: str, overrides: list[str] | None) -> Any:
    from alchemist_data.config import apply_overrides, parse_overrides
    from alchemist_model.configs import model_profile
    from alchemist_model.latents import DTYPES, LatentEncodeConfig

    model_profile(profile)  # a clear error for an unknown profile
    cfg = apply_overrides(LatentEncodeConfig(profile=profile), parse_overrides(overrides))
    if cfg.dtype not in DTYPES:
        raise ValueError(f"--set dtype={cfg.dtype}: choose float32, bfloat16 or float16")
    return cfg


def encode_job(opts: EncodeOptions, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an encode job; returns run.json's contents."""

    from alchemist_data import schema
    from alchemist_data.catalog import read_table
    from alchemist_data.runner import (
        ShardPartWriter,
        ShardTracker,
        check_run_options,
        completion_fields,
        pending_work,
        split_by_shard,
    )
    from alchemist_data.writer import RunWriter, environment_versions
    from alchemist_model.configs import model_profile
    from alchemist_model.encoders import load_components
    from alchemist_model.latents import TABLE, LatentEncoder, encode_work_table

    check_run_options(opts.runner, opts.num_workers)
    cfg = encode_config(opts.profile, opts.overrides)
    profile = model_profile(cfg.profile)
    curated, output = local_path(opts.curated, "CURATED"), local_path(opts.output, "--output")
    work = encode_work_table(curated, cfg, profile)  # reads the curated tables: fails early on a bad folder
    writer = RunWriter(output, tables=schema.LATENT_TABLES)
    writer.prepare()
    previous = writer.read_run_json()
    if previous and previous.get("fingerprint") != cfg.fingerprint():
        raise ValueError(
            f"{str(output)!r} holds latents made with other settings ({previous.get('config')}); "
            "resume with the same --profile/--set or choose a new --output"
        )
    encoders = output / "encoders"
    if not (encoders / "components.json").exists():
        load_components(profile, cfg.image_encoder, seed=cfg.seed).save(encoders)

    expected, pending, work = pending_work(work, writer)
    started = time.time()
    info: dict[str, Any] = {
        "kind": "latents",
        "status": "running",
        "curated": str(curated),
        "output": str(output),
        "profile": cfg.profile,
        "config": cfg.content(),
        "fingerprint": cfg.fingerprint(),
        "max_text_tokens": profile.max_text_tokens,
        "runner": opts.runner,
        "num_workers": opts.num_workers,
        "versions": environment_versions(),
        "started_at": started,
        "num_shards": len(expected),
        "num_shards_skipped": len(expected) - len(pending),
    }
    writer.write_run_json(info)
    from tqdm.auto import tqdm

    bar = tqdm(total=work.num_rows, desc="encode", unit="row", disable=not progress)
    # One row group per row: a training sample is then a single read of its own row.
    tracker = ShardTracker(writer, {s: expected[s] for s in pending}, lambda _shard, _counts, n: bar.update(n))
    part_writer = ShardPartWriter(str(output), functools.partial(_as_latents_table, TABLE), row_group_size=1)
    if work.num_rows:
        if opts.runner == "local":
            stage = LatentEncoder(cfg, encoders)
            stage.setup()
            for _, part in split_by_shard(work):
                for start in range(0, part.num_rows, cfg.batch_size):
                    tracker.add(part_writer(stage.process_batch(part.slice(start, cfg.batch_size))))
        else:
            _run_ray(cfg, encoders, work, part_writer, tracker, opts)
    bar.close()
    if tracker.pending:
        raise RuntimeError(f"shards not completed: {tracker.pending}")
    errors = read_table(output, TABLE, columns=["error"]).column("error")
    counts = {"rows": len(errors), "errors": len(errors) - errors.null_count}
    info |= completion_fields(started, counts, work.num_rows, "rows_per_s_this_run")
    writer.write_run_json(info)
    return info


def _as_latents_table(name: str, rows: Any) -> dict[str, Any]:
    return {name: rows}


class _EncoderUDF:
    """A Ray Data callable class: the encoders load once per actor; the worker writes its rows' parts itself."""

    def __init__(self, cfg: Any, encoders: str, part_writer: Any) -> None:
        from alchemist_model.latents import LatentEncoder

        self.stage = LatentEncoder(cfg, encoders)
        self.stage.setup()
        self.part_writer = part_writer

    def __call__(self, batch: Any) -> Any:
        return self.part_writer(self.stage.process_batch(batch))


def _run_ray(cfg: Any, encoders: Path, work: Any, part_writer: Any, tracker: Any, opts: EncodeOptions) -> None:
    import os

    import ray

    from alchemist_data.raycluster import connect
    from alchemist_data.runner import split_by_shard

    connect(opts.ray_address, max(opts.num_workers, os.cpu_count() or 1))
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    shards = [part for _, part in split_by_shard(work)]
    ds = ray.data.from_arrow(shards).map_batches(
        _EncoderUDF,
        fn_constructor_args=(cfg, str(encoders), part_writer),
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(opts.num_workers, len(shards))),
        num_cpus=1,
        num_gpus=gpus or None,
    )
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        tracker.add(batch)


def encode_cmd(
    curated: Path = typer.Argument(..., help="A curated run folder (output of `alchemist curate`)."),
    output: str = typer.Option(..., "--output", "-o", help="LATENTS folder (created; re-running resumes)."),
    profile: str = typer.Option(
        "tiny",
        "--profile",
        "-p",
        help="Model profile whose VAE, text encoder and "
        "clip size (or --set buckets=...) the latents are for: tiny | small | base | paper.",
    ),
    runner: str = typer.Option("ray", "--runner", help="ray (default) or local (in-process)."),
    ray_address: str = ray_address_option(),
    num_workers: int = typer.Option(1, "--num-workers", "-w", help="Encoder actors (one GPU each on GPU clusters)."),
    set_: list[str] = set_option(
        "Override a LatentEncodeConfig field, e.g. --set dtype=bfloat16, --set buckets=table6-256x144, "
        "--set batch_size=8."
    ),
) -> None:
    """Precompute VAE latents and text embeddings of a curated run for `alchemist train --latents`."""
    with exit_on(ValueError, FileNotFoundError):
        info = encode_job(
            EncodeOptions(str(curated), output, profile, list(set_ or []), runner, ray_address, num_workers)
        )
    c = info["counts"]
    typer.echo(
        f"done in {info['elapsed_s']:.1f}s: {c['rows']} (clip, size) rows, {c['errors']} errors "
        f"({info['num_shards_skipped']} of {info['num_shards']} shards were already done)"
    )
    typer.echo(f"train:  alchemist train --data {curated} --latents {output} --profile {profile} ...")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_cmd)
