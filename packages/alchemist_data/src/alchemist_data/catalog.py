"""Query curated runs with DuckDB: one view per table over the committed shards only.

Works on any location :mod:`alchemist_data.storage` opens (local folders, ``s3://``, ``gs://``): the files a marker
lists are opened as one pyarrow dataset per table and registered in DuckDB, so no DuckDB extension is needed
(DuckDB's own ``httpfs`` cannot be installed offline, and pyarrow's filesystems already read every store we write).
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from alchemist_data import schema
from alchemist_data.storage import Location, resolve
from alchemist_data.writer import DONE_DIR, marker_files, read_markers


class NotARunError(ValueError):
    pass


def _run(run_dir: str | os.PathLike[str] | Location) -> Location:
    run = run_dir if isinstance(run_dir, Location) else resolve(run_dir)
    if not run.join(DONE_DIR).is_dir() and not run.join(DONE_DIR).list_files(".json"):
        raise NotARunError(f"{run.uri!r} is not a curated run folder (no {DONE_DIR}/); run `alchemist curate` first")
    return run


def committed_parts(run_dir: str | os.PathLike[str] | Location, table: str) -> dict[str, list[Location]]:
    """For each committed shard (a marker exists), the files of ``table`` it consists of."""
    run = _run(run_dir)
    return _parts(run, table, read_markers(run))


def _parts(run: Location, table: str, markers: dict[str, dict[str, Any]]) -> dict[str, list[Location]]:
    return {shard: marker_files(run, table, shard, m) for shard, m in markers.items()}


def committed_files(run_dir: str | os.PathLike[str] | Location, table: str) -> list[Location]:
    """Parquet files of ``table`` that belong to committed shards, in shard order."""
    schema.table_schema(table)  # a clear error for an unknown table
    return [f for files in committed_parts(run_dir, table).values() for f in files]


def dataset(run_dir: str | os.PathLike[str] | Location, table: str) -> pads.Dataset:
    """The committed rows of ``table`` as a pyarrow dataset with the contract schema (lazy: nothing is read yet)."""
    return _dataset(table, committed_files(run_dir, table))


def _dataset(table: str, files: list[Location]) -> pads.Dataset:
    if not files:
        return pads.dataset(schema.empty_table(table))
    paths = [f.path for f in files]
    return pads.dataset(paths, schema=schema.table_schema(table), format="parquet", filesystem=files[0].fs)


def read_table(run_dir: str | os.PathLike[str] | Location, table: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole table of a run as Arrow, with the contract schema (empty when nothing is committed)."""
    return dataset(run_dir, table).to_table(columns=columns)


def connect(
    run_dir: str | os.PathLike[str] | Location, con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table (``clips``, ``entities``, ...) over the run's committed shards."""
    run = _run(run_dir)
    markers = read_markers(run)  # once for every table: on object storage each marker is a GET
    con = con or duckdb.connect()
    for table in schema.TABLES:
        files = [f for shard_files in _parts(run, table, markers).values() for f in shard_files]
        con.register(table, _dataset(table, files))
    return con


def query(run_dir: str | os.PathLike[str], sql: str) -> pa.Table:
    con = connect(run_dir)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as err:
        raise ValueError(f"query failed: {err}") from err
    finally:
        con.close()


def _r(expr: str) -> str:
    """Round a float32 aggregate for display (cast first, or float32 noise shows up in the digits)."""
    return f"round(CAST({expr} AS DOUBLE), 4)"


STATS_QUERIES: dict[str, str] = {
    "clips": "SELECT count(*) AS num_clips, count_if(has_random_models) AS num_random_model_clips,"
    " round(avg(duration_s), 2) AS mean_duration_s FROM clips",
    "entities per category": "SELECT category, count(DISTINCT clip_id || '/' || entity_word) AS num_words,"
    " count(*) AS num_frame_rows, count_if(is_detected) AS num_detected, count_if(has_face) AS num_faces"
    " FROM entities GROUP BY category ORDER BY category",
    "drop reasons (entity frames)": "SELECT coalesce(drop_reason, 'kept') AS reason, count(*) AS num FROM entities"
    " GROUP BY 1 ORDER BY num DESC",
    "reject reasons": "SELECT stage, reason, count(*) AS num FROM rejects GROUP BY stage, reason ORDER BY num DESC",
    "mask area (detected)": f"SELECT count(*) AS n, {_r('min(mask_area_frac)')} AS min,"
    f" {_r('quantile_cont(mask_area_frac, 0.25)')} AS p25, {_r('median(mask_area_frac)')} AS p50,"
    f" {_r('quantile_cont(mask_area_frac, 0.75)')} AS p75, {_r('max(mask_area_frac)')} AS max"
    " FROM entities WHERE is_detected",
    "scores (detected)": f"SELECT {_r('avg(box_score)')} AS mean_box_score,"
    f" {_r('median(box_score)')} AS median_box_score,"
    f" {_r('avg(mask_iou_score)')} AS mean_mask_iou, {_r('median(mask_iou_score)')} AS median_mask_iou"
    " FROM entities WHERE is_detected",
    "backgrounds": f"SELECT inpaint_backend, count(*) AS num, {_r('avg(foreground_area_frac)')} AS mean_fg_area"
    " FROM backgrounds GROUP BY 1",
}


def stats(run_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Counts per category, reject reasons, mask-area and score distributions."""
    con = connect(run_dir)
    try:
        return {title: con.sql(sql).to_arrow_table().to_pylist() for title, sql in STATS_QUERIES.items()}
    finally:
        con.close()
