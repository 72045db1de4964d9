"""The curation job: validate, plan shards, run the stages (in-process or on Ray), commit shards, write run.json.

Data plane: the process that finishes a batch of rows (a Ray worker, or this process with ``--runner local``)
splits it into the contract tables and writes them as *parts* straight to the output filesystem
(:class:`ShardPartWriter`); what comes back to the driver is a few bytes per clip: part names, row counts, and which
manifest rows the batch finished. The driver's :class:`ShardTracker` commits a shard (writes its marker) once every
manifest row of the shard has ended as clips or rejects. A stage may split a row into several clips (shots): each
derived row carries its manifest row's ``source_index`` and the number of rows it became (``num_siblings``), so the
accounting stays exact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alchemist_data.config import StageConfig
from alchemist_data.profiles import Profile, curation_profile
from alchemist_data.stages import WORK_SCHEMA, Stage, build_stages, split_outputs
from alchemist_data.writer import RunWriter, environment_versions, part_id, shard_name

log = logging.getLogger(__name__)


@dataclass
class CurateOptions:
    manifest: str
    output: str
    profile: str = "offline"
    overrides: dict[str, str] = field(default_factory=dict)
    runner: str = "ray"  # ray | local
    ray_address: str | None = None  # None: a fresh local Ray instance; "auto" or host:port: join that cluster
    num_workers: int = 1  # the largest actor pool of a stage whose config leaves max_workers at 0
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


# ----------------------------------------------------------------------------------------------------------------
class StageStats:
    """Rows each stage received and the seconds it spent on them (summed over workers, retries included)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = defaultdict(int)
        self.busy_s: dict[str, float] = defaultdict(float)

    def add(self, stage: str, rows: int, seconds: float) -> None:
        self.rows[stage] += rows
        self.busy_s[stage] += seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        out = {}
        for name in self.rows:
            busy = self.busy_s[name]
            out[name] = {
                "rows": self.rows[name],
                "busy_s": round(busy, 3),
                "rows_per_busy_s": round(self.rows[name] / busy, 3) if busy > 0 else None,
            }
        return out


def run_group(stages: list[Stage], table: pa.Table, record: Callable[[str, int, float], None]) -> pa.Table:
    """Run consecutive stages over one batch, reporting rows and busy time of each to ``record``."""
    for stage in stages:
        live = table.column("reject_reason").null_count
        t0 = time.perf_counter()
        table = stage.process_batch(table)
        record(stage.name, int(live), time.perf_counter() - t0)
    return table


#: what a worker sends back per shard of a finished batch: a few bytes per clip, whatever the crop sizes
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string()),
        pa.field("files_json", pa.string()),  # {table: part file name}
        pa.field("counts_json", pa.string()),  # {table: rows}
        pa.field("source_index", pa.list_(pa.int64())),
        pa.field("num_siblings", pa.list_(pa.int32())),
        pa.field("num_rows", pa.list_(pa.int32())),
    ]
)


class ShardPartWriter:
    """Worker side: finished work rows -> output tables -> parts on the output filesystem -> a small summary.

    ``split`` turns rows into the run's tables (curation: ``split_outputs`` with the profile; ``alchemist encode``:
    its latents table); it must be picklable, as it travels to the Ray workers.
    """

    def __init__(
        self,
        output: str,
        split: Callable[[pa.Table], dict[str, pa.Table]],
        row_group_size: int | None = None,
    ) -> None:
        self.output, self.split, self.row_group_size = output, split, row_group_size
        self._writer: RunWriter | None = None

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._writer is None:
            self._writer = RunWriter(self.output)  # workers only write parts: the folder layout is the driver's
        if "frames" in table.column_names:
            table = table.drop_columns(["frames"])  # raw frames never leave the worker
        rows = []
        for shard, part in split_by_shard(table):
            files, counts = self._writer.write_parts(
                shard, self.split(part), part_id(part.column("clip_id").to_pylist()), self.row_group_size
            )
            per_source: dict[int, list[int]] = {}
            if "source_index" in part.column_names:
                sources = zip(
                    part.column("source_index").to_pylist(), part.column("num_siblings").to_pylist(), strict=True
                )
            else:  # a job whose rows never split (encode): each row is its own input row
                sources = ((i, 1) for i in range(part.num_rows))
            for src, sib in sources:
                entry = per_source.setdefault(src, [sib, 0])
                entry[1] += 1
            rows.append(
                {
                    "shard": shard,
                    "files_json": json.dumps(files),
                    "counts_json": json.dumps(counts),
                    "source_index": list(per_source),
                    "num_siblings": [v[0] for v in per_source.values()],
                    "num_rows": [v[1] for v in per_source.values()],
                }
            )
        return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


class ShardTracker:
    """Driver side: counts finished manifest rows per shard and commits a shard (its marker) once all are in."""

    def __init__(
        self, writer: RunWriter, expected: dict[str, int], on_commit: Callable[[str, dict[str, int], int], None]
    ) -> None:
        self.writer, self.expected, self.on_commit = writer, dict(expected), on_commit
        self.files: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.partial: dict[str, dict[int, int]] = defaultdict(dict)  # shard -> source -> rows still to come
        self.finished: dict[str, int] = defaultdict(int)  # shard -> manifest rows fully accounted for
        self.committed: set[str] = set()
        self.bytes_received = 0

    def add(self, summary: pa.Table) -> None:
        self.bytes_received += summary.nbytes
        for row in summary.to_pylist():
            shard = row["shard"]
            for name, file_name in json.loads(row["files_json"]).items():
                self.files[shard][name].add(file_name)
            for name, n in json.loads(row["counts_json"]).items():
                self.counts[shard][name] += n
            partial = self.partial[shard]
            for src, siblings, n in zip(row["source_index"], row["num_siblings"], row["num_rows"], strict=True):
                left = partial.get(src, siblings) - n
                if left < 0:
                    raise RuntimeError(
                        f"shard {shard}: manifest row {src} came back as more than its {siblings} "
                        "work row(s); a stage emitted a row twice"
                    )
                if left == 0:
                    partial.pop(src, None)
                    self.finished[shard] += 1
                else:
                    partial[src] = left
            if self.finished[shard] == self.expected[shard] and not partial:
                self._commit(shard)

    def _commit(self, shard: str) -> None:
        files = {k: sorted(v) for k, v in self.files.pop(shard).items()}
        counts = dict(self.counts.pop(shard))
        self.writer.commit_marker(shard, files, counts, self.expected[shard])
        self.committed.add(shard)
        self.on_commit(shard, counts, self.expected[shard])

    @property
    def pending(self) -> list[str]:
        return [s for s in self.expected if s not in self.committed]


# ----------------------------------------------------------------------------------------------------------------
def run_local(
    stages: list[Stage], work: pa.Table, part_writer: ShardPartWriter, tracker: ShardTracker, stats: StageStats
) -> None:
    for stage in stages:
        stage.setup()
    for _, table in split_by_shard(work):
        tracker.add(part_writer(run_group(stages, table, stats.add)))


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
    """Run (or resume) a curation job. Validates the manifest and the output before any work."""
    from alchemist_data.manifest import read_manifest

    profile = curation_profile(opts.profile, opts.overrides)
    check_run_options(opts.runner, opts.num_workers)
    manifest = read_manifest(opts.manifest)
    if opts.limit is not None:
        manifest = manifest.slice(0, max(opts.limit, 0))
    if opts.runner == "ray":  # a stale or wrong cluster address fails here, before anything is written
        import os

        from alchemist_data.raycluster import connect

        connect(opts.ray_address, max(opts.num_workers, os.cpu_count() or 1))
    writer = RunWriter(opts.output)
    writer.prepare()
    previous = writer.read_run_json()
    fingerprint = _fingerprint(profile)
    if previous and previous.get("fingerprint") != fingerprint:
        raise RunMismatchError(
            f"{opts.output!r} holds a run made with other settings (profile {previous.get('profile')!r}); "
            "resume with the same --profile/--set flags or choose a new --output"
        )

    expected, pending, work = pending_work(build_work_table(manifest, profile.shard_size), writer)

    reporter = reporter or Reporter()
    notice = profile.random_model_notice()
    if notice:
        reporter.warn(notice)
    started = time.time()
    info = {
        "status": "running",
        "manifest": opts.manifest,
        "output": opts.output,
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
    tracker = ShardTracker(writer, {s: expected[s] for s in pending}, reporter.shard_done)
    stages = build_stages(profile)
    part_writer = ShardPartWriter(opts.output, functools.partial(split_outputs, profile=profile))
    stats: dict[str, dict[str, float]] = {}
    if work.num_rows:
        if opts.runner == "local":
            _check_device(profile)
            local_stats = StageStats()
            run_local(stages, work, part_writer, tracker, local_stats)
            stats = local_stats.snapshot()
        else:
            from alchemist_data.ray_runner import run_ray

            stats = run_ray(stages, work, part_writer, tracker, opts.num_workers, opts.ray_address)
    reporter.stop()
    if tracker.pending:
        raise RuntimeError(f"shards not completed: {tracker.pending}")

    totals: dict[str, int] = defaultdict(int)
    num_rows_done = 0
    for marker in writer.done_shards().values():
        if marker["shard"] in expected:
            num_rows_done += marker["num_input_rows"]
            for k, v in marker["counts"].items():
                totals[k] += v
    # Rows of each table: clips + rejects equals the manifest rows unless shots.mode=split cut some into several.
    info |= completion_fields(
        started, dict(totals), work.num_rows, "clips_per_s_this_run", num_manifest_rows_done=num_rows_done
    )
    info |= {
        "stages": stats,
        "slowest_stage": _slowest(stats),
        "driver_bytes_received": tracker.bytes_received,
        "driver_bytes_per_input_row": round(tracker.bytes_received / work.num_rows, 1) if work.num_rows else None,
    }
    writer.write_run_json(info)
    return info


def pending_work(work: pa.Table, writer: RunWriter) -> tuple[dict[str, int], list[str], pa.Table]:
    """What a (re)started job still has to do: rows per shard, the shards without a complete marker (a marker
    whose input count differs is redone), and the work rows of those shards."""
    expected = _value_counts(work.column("shard"))
    done = writer.done_shards()
    pending = [s for s, n in expected.items() if done.get(s, {}).get("num_input_rows") != n]
    work = work.filter(pc.is_in(work.column("shard"), pa.array(pending, pa.string()))) if pending else work.slice(0, 0)
    return expected, pending, work


def check_run_options(runner: str, num_workers: int) -> None:
    """Fail before any work on a runner other than ``ray`` / ``local`` or fewer than one worker."""
    if runner not in ("ray", "local"):
        raise ValueError(f"unknown runner {runner!r}; use ray or local")
    if num_workers < 1:
        raise ValueError("--num-workers must be at least 1")


def completion_fields(
    started: float, counts: dict[str, int], num_rows: int, rate_key: str, **more: Any
) -> dict[str, Any]:
    """What a finished job adds to its run.json, in order: status, end time, elapsed seconds, its tables' row
    ``counts``, ``more``, then ``rate_key``: the rows this run processed (``num_rows``) per second."""
    elapsed = time.time() - started
    return {
        "status": "complete",
        "finished_at": time.time(),
        "elapsed_s": round(elapsed, 3),
        "counts": counts,
        **more,
        rate_key: round(num_rows / elapsed, 3) if elapsed > 0 else None,
    }


def _slowest(stats: dict[str, dict[str, float]]) -> str | None:
    """The stage with the most busy time: the one that sets the pace when pools are sized alike."""
    timed = {name: s["busy_s"] for name, s in stats.items() if s["rows"]}
    return max(timed, key=timed.__getitem__) if timed else None


def _fingerprint(profile: Profile) -> str:
    """Settings that change what a shard contains; resuming with different ones would mix incompatible rows."""
    settings = profile.to_dict()
    for section in settings.values():  # how work is spread over Ray does not change a row
        if isinstance(section, dict):
            for f in fields(StageConfig):  # batch_size, resources, min_workers, max_workers
                section.pop(f.name, None)
    return hashlib.sha1(repr(sorted(settings.items())).encode()).hexdigest()[:16]


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

    def shard_done(self, shard: str, counts: dict[str, int], num_input_rows: int) -> None:
        self.done += num_input_rows
        self.rejected += counts.get("rejects", 0)
        if self.progress is not None:
            rate = self.done / max(time.time() - self.t0, 1e-9)
            self.progress.update(
                self.task, completed=self.done, status=f"rejected {self.rejected} | {rate:.2f} clips/s"
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
