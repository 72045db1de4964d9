"""Run-directory writer: deterministic shard names, parts written by the workers, markers written last.

Layout (contract), on any filesystem :mod:`alchemist_data.storage` opens (local, ``s3://``, ``gs://``)::

    DIR/clips/part-00000-<part>.parquet     DIR/entities/part-00000-<part>.parquet   (and backgrounds, rejects, shots)
    DIR/_done/part-00000.json               # completion marker of shard part-00000, written last
    DIR/run.json                            # resolved config, versions, counts, per-stage throughput

A shard is one contiguous slice of the manifest. The workers that finish its rows write them as *parts* straight to
the output (one part per table per batch, named after the shard and a hash of the batch's clip ids); the driver
only receives counts and part names, and once every row of the shard is accounted for it writes the shard's marker,
which lists the shard's parts. Readers (``catalog``) and resume trust markers only: a part that no marker lists (a
batch of a killed job, or a worker that died after writing) is never read, and a re-run writes the shard again.
Object stores have no rename, and need none here: each part and each marker is one PUT, which is atomic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from alchemist_data import schema
from alchemist_data.storage import Location, StorageError, check_writable_dir, resolve

DONE_DIR = "_done"


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def part_id(clip_ids: list[str]) -> str:
    """A deterministic name for a batch of rows: a retried batch overwrites its own part instead of adding one."""
    return hashlib.sha1("\x1f".join(sorted(clip_ids)).encode()).hexdigest()[:12]


class OutputNotWritableError(StorageError):
    pass


class RunWriter:
    """``tables``: the table folders of this kind of run (the curated tables, or ``schema.LATENT_TABLES``)."""

    def __init__(self, out_dir: str | os.PathLike[str], tables: dict[str, pa.Schema] = schema.TABLES) -> None:
        self.root: Location = resolve(out_dir)
        self.tables = tables

    def prepare(self) -> None:
        """Create the folder layout, failing at once (before any work) when the output cannot be written."""
        try:
            check_writable_dir(self.root)
            for name in (*self.tables, DONE_DIR):
                self.root.join(name).makedirs()
        except StorageError as err:
            raise OutputNotWritableError(str(err)) from err
        except OSError as err:
            raise OutputNotWritableError(
                f"output folder {self.root.uri!r} is not writable ({err.strerror or err}); "
                "choose another --output or fix its permissions"
            ) from err

    def done_shards(self) -> dict[str, dict[str, Any]]:
        """Markers of committed shards: name -> marker contents."""
        return read_markers(self.root)

    def write_parts(
        self, shard: str, tables: dict[str, pa.Table], part: str, row_group_size: int | None = None
    ) -> tuple[dict[str, str], dict[str, int]]:
        """Write one part of ``shard`` per non-empty table (run by the worker that produced the rows).

        ``row_group_size``: rows per Parquet row group (small groups let readers fetch single large rows).
        Returns ({table: part file name}, {table: rows}); nothing is visible to readers until the shard's marker
        lists these names.
        """
        files, counts = {}, {}
        for name, table in tables.items():
            counts[name] = table.num_rows
            if table.num_rows == 0:
                continue
            table = schema.conform(table, name)
            file_name = f"{shard}-{part}.parquet" if part else f"{shard}.parquet"
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
            self.root.join(name, file_name).write_bytes(buf.getvalue())
            files[name] = file_name
        return files, counts

    def commit_marker(
        self, shard: str, files: dict[str, list[str]], counts: dict[str, int], num_input_rows: int
    ) -> dict[str, int]:
        """Make a shard visible: its marker lists its parts. Written by the driver after the last part landed."""
        marker = {
            "shard": shard,
            "num_input_rows": num_input_rows,
            "counts": counts,
            "files": {k: sorted(v) for k, v in files.items()},
            "committed_at": time.time(),
        }
        self.root.join(DONE_DIR, f"{shard}.json").write_text(json.dumps(marker))
        return counts

    def commit_shard(self, shard: str, tables: dict[str, pa.Table], num_input_rows: int) -> dict[str, int]:
        """Write a whole shard from one process (one part per table) and commit it."""
        files, counts = self.write_parts(shard, tables, part="")
        return self.commit_marker(shard, {k: [v] for k, v in files.items()}, counts, num_input_rows)

    def write_run_json(self, info: dict[str, Any]) -> None:
        self.root.join("run.json").write_text(json.dumps(info, indent=2, default=str))

    def read_run_json(self) -> dict[str, Any] | None:
        loc = self.root.join("run.json")
        if not loc.exists():
            return None
        return json.loads(loc.read_text())


def read_markers(run: Location) -> dict[str, dict[str, Any]]:
    """The committed shards of a run: shard name -> marker contents."""
    out = {}
    for marker in run.join(DONE_DIR).list_files(".json"):
        name = marker.path.rsplit("/", 1)[-1][: -len(".json")]
        if not name.startswith("part-"):
            continue
        try:
            out[name] = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a torn marker means the shard is not committed; it will be redone
    return out


def marker_files(run: Location, table: str, shard: str, marker: dict[str, Any]) -> list[Location]:
    """The files of ``table`` a committed shard consists of (markers before part lists: one file per shard)."""
    if "files" in marker:
        return [run.join(table, name) for name in marker["files"].get(table, [])]
    legacy = run.join(table, f"{shard}.parquet")
    return [legacy] if legacy.exists() else []


def environment_versions() -> dict[str, str]:
    """Versions recorded in run.json so a table can be traced to the code and stack that made it."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "schema": schema.SCHEMA_VERSION}
    for dist in ("alchemist-data", "torch", "transformers", "ray", "pyarrow", "av", "spacy", "segment-anything"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions
