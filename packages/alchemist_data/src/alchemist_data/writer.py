"""Run-directory writer: deterministic shard names, atomic commits, resume without duplicates.

Layout (contract)::

    DIR/clips/part-00000.parquet      DIR/entities/part-00000.parquet
    DIR/backgrounds/part-00000.parquet DIR/rejects/part-00000.parquet
    DIR/_done/part-00000.json          # completion marker, written last
    DIR/run.json                       # resolved config, versions, counts

A shard is one contiguous slice of the manifest. Its four files are written under temporary names and renamed
into place, then the marker is written. Readers (``catalog``) only see shards that have a marker, so a crash in
the middle of a commit never exposes half a shard, and re-running rewrites the same names (no duplicates).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from alchemist_data import schema

DONE_DIR = "_done"


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


class OutputNotWritableError(ValueError):
    pass


class RunWriter:
    """``tables``: the table folders of this kind of run (the curated tables, or ``schema.LATENT_TABLES``)."""

    def __init__(self, out_dir: str | os.PathLike[str], tables: dict[str, pa.Schema] = schema.TABLES) -> None:
        self.out_dir = Path(out_dir)
        self.tables = tables

    def prepare(self) -> None:
        """Create the folder layout, failing at once (before any work) when the folder is not writable."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in (*self.tables, DONE_DIR):
                (self.out_dir / name).mkdir(exist_ok=True)
            probe = self.out_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise OutputNotWritableError(
                f"output folder {str(self.out_dir)!r} is not writable ({err.strerror or err}); "
                "choose another --output or fix its permissions"
            ) from err

    def done_shards(self) -> dict[str, dict[str, Any]]:
        """Markers of committed shards: name -> marker contents."""
        out = {}
        done = self.out_dir / DONE_DIR
        if done.is_dir():
            for marker in sorted(done.glob("part-*.json")):
                try:
                    out[marker.stem] = json.loads(marker.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # a torn marker means the shard is not committed; it will be redone
        return out

    def commit_shard(self, shard: str, tables: dict[str, pa.Table], num_input_rows: int,
                     row_group_size: int | None = None) -> dict[str, int]:
        """``row_group_size``: rows per Parquet row group (small groups let readers fetch single large rows)."""
        counts = {}
        for name, table in tables.items():
            table = schema.conform(table, name)
            final = self.out_dir / name / f"{shard}.parquet"
            tmp = final.with_name(f".{shard}.parquet.tmp-{os.getpid()}")
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
            os.replace(tmp, final)
            counts[name] = table.num_rows
        marker = {"shard": shard, "num_input_rows": num_input_rows, "counts": counts, "committed_at": time.time()}
        _atomic_write_text(self.out_dir / DONE_DIR / f"{shard}.json", json.dumps(marker))
        return counts

    def write_run_json(self, info: dict[str, Any]) -> None:
        _atomic_write_text(self.out_dir / "run.json", json.dumps(info, indent=2, default=str))

    def read_run_json(self) -> dict[str, Any] | None:
        path = self.out_dir / "run.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
