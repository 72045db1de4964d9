"""The stages on Ray Data: one autoscaling actor pool per group of consecutive stages with the same resources.

* Consecutive stages that ask for the same resources and pool bounds are fused into one operator (one actor pool),
  which keeps frames out of the object store between CPU stages; GPU stages (``paper``) get their own pools with
  ``num_gpus``, so the GPU pool sets the pace and the CPU pools around it grow to keep it fed.
* Each pool grows between ``min_workers`` and ``max_workers`` of its stages' configs (``0`` = ``--num-workers``).
* The last operator writes the finished rows as shard parts straight to the output (``ShardPartWriter``); the driver
  only receives part names and counts.
* Fault tolerance: actors restart and their tasks are retried on a surviving node when a worker node dies (Ray
  Data gives its actor pools ``max_restarts=-1`` and ``max_task_retries=-1``; a stage's own errors never reach Ray,
  they become rejects); parts are named by their rows, so a retried batch rewrites its own part,
  and a shard is committed once, by the driver, after all of its rows are accounted for.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from alchemist_data.runner import ShardPartWriter, ShardTracker, StageStats, run_group, split_by_shard
from alchemist_data.stages import Stage

log = logging.getLogger(__name__)


def fuse_stages(stages: list[Stage]) -> list[list[Stage]]:
    """Group consecutive stages with identical resource requests and pool bounds (each group is one operator)."""

    def key(s: Stage) -> tuple[Any, ...]:
        return (s.cfg.resources, s.cfg.min_workers, s.cfg.max_workers)

    groups: list[list[Stage]] = []
    for stage in stages:
        if groups and key(groups[-1][0]) == key(stage):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


class StageGroupUDF:
    """A Ray Data callable class running a fused group of stages; models load once per actor."""

    def __init__(self, stages: list[Stage], part_writer: ShardPartWriter | None, stats: Any) -> None:
        # Stages arrive unset-up (config only, cheap to pickle); each actor loads its models once here.
        self.stages, self.part_writer, self.stats = stages, part_writer, stats
        for s in self.stages:
            s.setup()

    def _record(self, stage: str, rows: int, seconds: float) -> None:
        self.stats.add.remote(stage, rows, seconds)  # fire and forget: a few bytes per batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = run_group(self.stages, batch, self._record)
        return self.part_writer(out) if self.part_writer is not None else out


def run_ray(
    stages: list[Stage],
    work: pa.Table,
    part_writer: ShardPartWriter,
    tracker: ShardTracker,
    num_workers: int,
    ray_address: str | None,
) -> dict[str, dict[str, float]]:
    """Run the stages over ``work`` on Ray Data; returns the per-stage statistics."""
    import ray

    _check_gpus(stages, ray.cluster_resources().get("GPU", 0), joined=bool(ray_address))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    # The stats actor lives on the head node, which a cluster cannot lose and go on (it holds the GCS); worker nodes
    # may come and go. No CPU is asked, so a head started with --num-cpus=0 takes it.
    stats = ray.remote(num_cpus=0, resources={"node:__internal_head__": 0.001})(StageStats).remote()
    # One block per shard keeps a shard's rows together and gives the pools independent units of work.
    shards = [part for _, part in split_by_shard(work)]
    ds = ray.data.from_arrow(shards)
    groups = fuse_stages(stages)
    for i, group in enumerate(groups):
        res = group[0].cfg.resources
        most = min(group[0].cfg.max_workers or num_workers, len(shards))  # no idle actors on small runs
        least = min(group[0].cfg.min_workers, most)
        last = i == len(groups) - 1
        ds = ds.map_batches(
            StageGroupUDF,
            fn_constructor_args=(group, part_writer if last else None, stats),
            batch_format="pyarrow",
            batch_size=min(s.cfg.batch_size for s in group),
            # Start at the bound the work can use (no warm-up ramp on short jobs); Ray Data shrinks idle pools to min.
            compute=ray.data.ActorPoolStrategy(min_size=least, max_size=most, initial_size=most),
            num_cpus=res.cpus,
            num_gpus=res.gpus or None,
            memory=res.memory_mb * 1024**2 or None,
        )
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        tracker.add(batch)
    snapshot = ray.get(stats.snapshot.remote())
    ray.kill(stats)
    return snapshot


def _check_gpus(stages: list[Stage], cluster_gpus: float, joined: bool) -> None:
    """Fail at once, instead of Ray waiting forever, when GPU stages meet a cluster without GPUs."""
    needs = [s.name for s in stages if s.cfg.resources.gpus > 0]
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
