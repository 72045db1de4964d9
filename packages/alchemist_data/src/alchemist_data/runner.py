"""Runners: map the stages onto Ray Data (default) or run them in-process (tests, debugging, `--runner local`).

Both runners consume the same work table (one row per clip, tagged with its shard) and hand finished rows to a
``ShardCollector``, which commits a shard atomically as soon as all of its rows are back. Consecutive stages that
ask for the same resources are fused into one Ray operator (one actor pool), which keeps frames out of the object
store between CPU stages; GPU stages (``paper`` profile) become their own actor pools with ``num_gpus``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alchemist_data.config import Resources
from alchemist_data.profiles import Profile, curation_profile
from alchemist_data.stages import WORK_SCHEMA, Stage, build_stages, split_outputs
from alchemist_data.writer import RunWriter, environment_versions, shard_name

log = logging.getLogger(__name__)


@dataclass
class CurateOptions:
    manifest: str
    output: str
    profile: str = "offline"
    overrides: dict[str, str] = field(default_factory=dict)
    runner: str = "ray"  # ray | local
    ray_address: str | None = None
    num_workers: int = 1
    limit: int | None = None


# ----------------------------------------------------------------------------------------------------------------
def build_work_table(manifest: pa.Table, shard_size: int) -> pa.Table:
    """Tag manifest rows with their shard and reject later duplicates of a clip id (stage ``manifest``)."""
    n = manifest.num_rows
    shards = [shard_name(i // shard_size) for i in range(n)]
    seen: set[str] = set()
    stage, reason, detail = [], [], []
    for cid in manifest.column("clip_id").to_pylist():
        if cid in seen:
            stage.append("manifest")
            reason.append("duplicate_clip_id")
            detail.append(f"clip_id {cid!r} appears earlier in the manifest; only the first occurrence is curated")
        else:
            seen.add(cid)
            stage.append(None)
            reason.append(None)
            detail.append(None)
    cols = {name: manifest.column(name) for name in ("clip_id", "video", "caption", "start_s", "end_s")}
    cols |= {"shard": shards, "source_index": list(range(n)), "num_siblings": [1] * n}
    cols |= {"reject_stage": stage, "reject_reason": reason, "reject_detail": detail}
    return pa.table(cols, schema=WORK_SCHEMA)


def split_by_shard(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """Cut a table into its runs of equal ``shard`` (zero-copy slices, one pass over the column).

    Work rows are in manifest order, so a shard is one contiguous run; filtering the whole table once per shard would
    cost O(rows x shards) on a large manifest.
    """
    names = table.column("shard").to_pylist()
    runs, start = [], 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            runs.append((names[start], table.slice(start, i - start)))
            start = i
    return runs


def fuse_stages(stages: list[Stage]) -> list[list[Stage]]:
    """Group consecutive stages with identical resource requests (each group is one Ray operator)."""
    groups: list[list[Stage]] = []
    for stage in stages:
        if groups and groups[-1][0].resources == stage.resources:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def run_group(stages: list[Stage], table: pa.Table, drop_frames: bool) -> pa.Table:
    for stage in stages:
        table = stage.process_batch(table)
    if drop_frames and "frames" in table.column_names:
        table = table.drop_columns(["frames"])
    return table


class StageGroupUDF:
    """A Ray Data callable class running a fused group of stages; models load once per actor."""

    def __init__(self, stages: list[Stage], drop_frames: bool) -> None:
        # Stages arrive unset-up (config only, cheap to pickle); each actor loads its models once here.
        self.stages = stages
        for s in self.stages:
            s.setup()
        self.drop_frames = drop_frames

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_group(self.stages, batch, self.drop_frames)


class ShardCollector:
    """Accumulates finished rows per shard and commits each shard once complete.

    ``expected`` counts manifest rows per shard. A manifest row is finished once ``num_siblings`` work rows with its
    ``source_index`` are back (more than one when a stage split it, see ``stages/base.py``), so a shard commits only
    when every row derived from every one of its manifest rows has arrived, however the batches cut them.
    """

    def __init__(
        self,
        writer: RunWriter,
        expected: dict[str, int],
        profile: Profile,
        on_commit: Callable[[str, dict[str, int], int], None],
    ) -> None:
        self.writer, self.expected, self.profile, self.on_commit = writer, dict(expected), profile, on_commit
        self.parts: dict[str, list[pa.Table]] = defaultdict(list)
        self.seen: dict[str, dict[int, int]] = defaultdict(dict)  # shard -> source_index -> work rows received
        self.finished: dict[str, int] = defaultdict(int)  # shard -> manifest rows with all their work rows back

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        for shard, part in split_by_shard(table):
            self.parts[shard].append(part)
            seen = self.seen[shard]
            sources = part.column("source_index").to_pylist()
            for src, siblings in zip(sources, part.column("num_siblings").to_pylist(), strict=True):
                seen[src] = seen.get(src, 0) + 1
                if seen[src] > siblings:
                    raise RuntimeError(f"shard {shard}: manifest row {src} came back as more than its {siblings} "
                                       "work row(s); a stage emitted a row twice")
                if seen[src] == siblings:
                    self.finished[shard] += 1
            if self.finished[shard] == self.expected[shard]:
                self._commit(shard)

    def _commit(self, shard: str) -> None:
        rows = pa.concat_tables(self.parts.pop(shard), promote_options="permissive")
        self.seen.pop(shard, None)
        counts = self.writer.commit_shard(shard, split_outputs(rows, self.profile), self.expected[shard])
        self.on_commit(shard, counts, self.expected[shard])

    @property
    def pending(self) -> list[str]:
        return [s for s in self.expected if self.finished[s] < self.expected[s]]


# ----------------------------------------------------------------------------------------------------------------
def run_local(stages: list[Stage], work: pa.Table, collector: ShardCollector) -> None:
    for stage in stages:
        stage.setup()
    for _, table in split_by_shard(work):
        collector.add(run_group(stages, table, drop_frames=True))


def run_ray(
    stages: list[Stage],
    work: pa.Table,
    collector: ShardCollector,
    num_workers: int,
    ray_address: str | None,
) -> None:
    import ray

    if not ray.is_initialized():
        init: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
        if ray_address:
            init["address"] = ray_address
        else:
            init["num_cpus"] = max(num_workers, os.cpu_count() or 1)
            store = os.environ.get("ALCHEMIST_RAY_OBJECT_STORE_MB")
            if store:
                init["object_store_memory"] = int(store) * 1024**2
        ray.init(**init)
    _check_gpus(stages, ray.cluster_resources().get("GPU", 0), joined=bool(ray_address))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    # One block per shard keeps a shard's rows together and gives the pool independent units of work.
    shards = [part for _, part in split_by_shard(work)]
    ds = ray.data.from_arrow(shards)
    groups = fuse_stages(stages)
    for i, group in enumerate(groups):
        res: Resources = group[0].resources
        ds = ds.map_batches(
            StageGroupUDF,
            fn_constructor_args=(group, i == len(groups) - 1),
            batch_format="pyarrow",
            batch_size=min(s.batch_size for s in group),
            compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(shards))),  # no idle actors on small runs
            num_cpus=res.cpus,
            num_gpus=res.gpus or None,
        )
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        collector.add(batch)


def _check_gpus(stages: list[Stage], cluster_gpus: float, joined: bool) -> None:
    """Fail at once, instead of Ray waiting forever, when GPU stages meet a cluster without GPUs."""
    needs = [s.name for s in stages if s.resources.gpus > 0]
    if not needs or cluster_gpus > 0:
        return
    hint = (
        f"stages {', '.join(needs)} ask Ray for GPUs but the cluster has none. Run on a GPU cluster "
        "(--ray-address), use --profile offline, or move the stages to CPU with --set device=cpu and "
        "--set <stage>.resources.gpus=0"
    )
    if joined:  # an autoscaling cluster may still add GPU nodes: say so, but let Ray wait for them
        log.warning("%s (waiting for the autoscaler)", hint)
        return
    raise ValueError(hint)


def _check_device(profile: Profile) -> None:
    if profile.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"profile {profile.name!r} runs its models on {profile.device!r} but this machine has no CUDA device; "
                "use a GPU machine, --set device=cpu, or --profile offline"
            )


# ----------------------------------------------------------------------------------------------------------------
class RunMismatchError(ValueError):
    pass


def curate(opts: CurateOptions, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) a curation job. Validates the manifest and output folder before any work."""
    from alchemist_data.manifest import read_manifest

    profile = curation_profile(opts.profile, opts.overrides)
    if opts.runner not in ("ray", "local"):
        raise ValueError(f"unknown runner {opts.runner!r}; use ray or local")
    if opts.num_workers < 1:
        raise ValueError("--num-workers must be at least 1")
    manifest = read_manifest(opts.manifest)
    if opts.limit is not None:
        manifest = manifest.slice(0, max(opts.limit, 0))
    writer = RunWriter(opts.output)
    writer.prepare()
    previous = writer.read_run_json()
    fingerprint = _fingerprint(profile)
    if previous and previous.get("fingerprint") != fingerprint:
        raise RunMismatchError(
            f"{opts.output!r} holds a run made with other settings (profile {previous.get('profile')!r}); "
            "resume with the same --profile/--set flags or choose a new --output"
        )

    work = build_work_table(manifest, profile.shard_size)
    expected = {s: n for s, n in _value_counts(work.column("shard")).items()}
    done = writer.done_shards()
    pending = [s for s, n in expected.items() if done.get(s, {}).get("num_input_rows") != n]
    work = work.filter(pc.is_in(work.column("shard"), pa.array(pending, pa.string()))) if pending else work.slice(0, 0)

    reporter = reporter or Reporter()
    notice = profile.random_model_notice()
    if notice:
        reporter.warn(notice)
    started = time.time()
    info = {
        "status": "running",
        "manifest": str(Path(opts.manifest)),
        "output": str(Path(opts.output)),
        "profile": profile.name,
        "fingerprint": fingerprint,
        "has_random_models": profile.has_random_models,
        "runner": opts.runner,
        "num_workers": opts.num_workers,
        "ray_address": opts.ray_address,
        "config": profile.to_dict(),
        "versions": environment_versions(),
        "started_at": started,
        "num_manifest_rows": manifest.num_rows,
        "num_shards": len(expected),
        "num_shards_skipped": len(expected) - len(pending),
    }
    writer.write_run_json(info)

    reporter.start(total=work.num_rows, skipped_shards=len(expected) - len(pending))
    collector = ShardCollector(writer, {s: expected[s] for s in pending}, profile, reporter.shard_done)
    stages = build_stages(profile)
    if work.num_rows:
        if opts.runner == "local":
            _check_device(profile)
            run_local(stages, work, collector)
        else:
            run_ray(stages, work, collector, opts.num_workers, opts.ray_address)
    reporter.stop()
    if collector.pending:
        raise RuntimeError(f"shards not completed: {collector.pending}")

    totals: dict[str, int] = defaultdict(int)
    num_rows_done = 0
    for marker in writer.done_shards().values():
        if marker["shard"] in expected:
            num_rows_done += marker["num_input_rows"]
            for k, v in marker["counts"].items():
                totals[k] += v
    elapsed = time.time() - started
    info |= {
        "status": "complete",
        "finished_at": time.time(),
        "elapsed_s": round(elapsed, 3),
        # Rows of each table. clips + rejects equals the manifest rows unless shots.mode=split cut some into several.
        "counts": dict(totals),
        "num_manifest_rows_done": num_rows_done,
        "clips_per_s_this_run": round(work.num_rows / elapsed, 3) if elapsed > 0 else None,
    }
    writer.write_run_json(info)
    return info


def _fingerprint(profile: Profile) -> str:
    """Settings that change what a shard contains; resuming with different ones would mix incompatible rows."""
    return hashlib.sha1(repr(sorted(profile.to_dict().items())).encode()).hexdigest()[:16]


def _value_counts(col: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(col).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


class Reporter:
    """Progress: clips done, rejected, clips/s; a rich progress bar when attached to a terminal."""

    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console
        self.progress = None
        self.done = self.rejected = 0
        self.t0 = time.time()

    def warn(self, text: str) -> None:
        if self.enabled:
            from rich.console import Console

            (self.console or Console(stderr=True)).print(f"[bold yellow]WARNING[/] {text}")

    def start(self, total: int, skipped_shards: int) -> None:
        self.t0 = time.time()
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("curating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("curate", total=total, status=f"resumed: {skipped_shards} shards done")

    def shard_done(self, shard: str, counts: dict[str, int], num_input_rows: int | None = None) -> None:
        """``num_input_rows``: the shard's manifest rows (what the bar counts; a split row yields several clips)."""
        out = counts.get("clips", 0) + counts.get("rejects", 0)
        self.done += out if num_input_rows is None else num_input_rows
        self.rejected += counts.get("rejects", 0)
        if self.progress is not None:
            rate = self.done / max(time.time() - self.t0, 1e-9)
            self.progress.update(
                self.task, completed=self.done, status=f"rejected {self.rejected} | {rate:.2f} clips/s"
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
