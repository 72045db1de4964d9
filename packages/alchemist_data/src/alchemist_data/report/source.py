"""Everything the report reads, in one place: run folders (local or object storage) and their tables.

``RunSource`` is the only reader. Files next to the tables (``run.json``, an eval's ``scores.parquet``) open through
``alchemist_data.storage``, so ``s3://`` / ``gs://`` folders work like local ones; the tables go through the catalog
(DuckDB over committed shards only, ``alchemist_data.catalog``), which reads the same stores.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alchemist_data.storage import is_uri

#: What a folder holds, as far as the report is concerned.


class NotAReportableFolderError(ValueError):
    pass


def sample_key(clip_id: str) -> str:
    """What clips are sampled by: the md5 of the id, as the report's SQL ``ORDER BY md5(clip_id)`` does."""
    import hashlib

    return hashlib.md5(clip_id.encode()).hexdigest()


class RunSource:
    """A run folder: a curated run, a benchmark folder (``alchemist benchmark prepare``) or an eval output."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from alchemist_data.storage import StorageError, resolve

        self.root = os.fspath(root)
        try:
            self.loc = resolve(self.root)
        except StorageError as err:
            raise NotAReportableFolderError(str(err)) from err
        self.fs, self.base = self.loc.fs, self.loc.path
        info = self.fs.get_file_info(self.base)
        if info.type.name != "Directory":
            raise NotAReportableFolderError(
                f"{self.root!r} is not a folder: give a curated run, a benchmark folder "
                "or an `alchemist eval` output folder"
            )
        self.kind = self._detect()
        self._con: Any = None

    # ------------------------------------------------------------------------------------------------ files
    def _path(self, name: str) -> str:
        return posixpath.join(self.base, name) if is_uri(self.root) else os.path.join(self.base, name)

    def exists(self, name: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self._path(name)).type != pafs.FileType.NotFound

    def read_json(self, name: str) -> dict[str, Any] | None:
        if not self.exists(name):
            return None
        with self.fs.open_input_stream(self._path(name)) as f:
            return json.loads(f.read().decode())

    def read_parquet(self, name: str) -> pa.Table:
        return pq.read_table(self._path(name), filesystem=self.fs)

    def _detect(self) -> str:
        from alchemist_data.writer import DONE_DIR

        if self.exists("scores.parquet") and self.exists("summary.json"):
            return "eval"
        if self.exists(DONE_DIR):
            info = self.read_json("run.json") or {}
            return "benchmark" if info.get("kind") == "benchmark" or self.exists("benchmark.json") else "curated"
        raise NotAReportableFolderError(
            f"{self.root!r} is neither a curated run (no {DONE_DIR}/: run `alchemist curate`) nor an eval output "
            "(no scores.parquet + summary.json: run `alchemist eval`)"
        )

    def video_path(self, video: str) -> str:
        """A clip's ``video`` as stored (absolute, a URI, or relative to the run as in a benchmark folder)."""
        if not video or is_uri(video) or os.path.isabs(video):
            return video
        return self._path(video) if not is_uri(self.root) else f"{self.root.rstrip('/')}/{video}"

    # ------------------------------------------------------------------------------------------------ tables
    def sql(self, query: str) -> list[dict[str, Any]]:
        """DuckDB over the run's views ``clips``, ``entities``, ``backgrounds``, ``rejects`` (committed shards)."""
        from alchemist_data import catalog

        if self._con is None:
            self._con = catalog.connect(self.root)
        return self._con.sql(query).to_arrow_table().to_pylist()

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        """``alchemist stats``' tables, over this source's DuckDB views (not a second connection)."""
        from alchemist_data.catalog import STATS_QUERIES

        return {title: self.sql(query) for title, query in STATS_QUERIES.items()}

    @functools.cached_property
    def _markers(self) -> dict[str, dict[str, Any]]:
        """The committed shards' markers, read once per report (each is a GET on object storage)."""
        from alchemist_data.writer import read_markers

        return read_markers(self.loc)

    def rows(
        self,
        table: str,
        clip_ids: list[str],
        shards: set[str | None],
        columns: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` (a schema table, or one of a benchmark's extra tables such as ``gt_frames``) for these
        clips, reading only the committed shard files named in ``shards``: image columns of a large run are far
        bigger than memory, and the clips table says which shard holds each clip."""
        from alchemist_data.writer import marker_files

        if not clip_ids:
            return []
        done = set(self._markers)
        wanted = pa.array(sorted(set(clip_ids)), pa.string())
        out: list[dict[str, Any]] = []
        # A clip row without a shard name (older runs) means: look in every committed shard.
        from alchemist_data import schema

        # A curated table's shard is the parts its marker lists; a benchmark's extra tables keep one file per shard.
        curated = table in schema.TABLES
        parts = {s: marker_files(self.loc, table, s, m) for s, m in self._markers.items()} if curated else {}
        for shard in sorted(done if None in shards else shards & done):
            names = [f.path for f in parts.get(shard, [])] or [self._path(f"{table}/{shard}.parquet")]
            for name in names:
                if self.fs.get_file_info(name).type.name == "NotFound":
                    continue
                part = pq.read_table(
                    name, filesystem=self.fs, columns=columns, filters=pc.field("clip_id").isin(wanted)
                )
                out.extend(part.to_pylist())
        return out

    def num_shards(self) -> int:
        """Committed shards (completion markers) of a curated run or benchmark folder."""
        return len(self._markers)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
