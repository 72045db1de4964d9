"""Query curated runs with DuckDB: one view per table over the committed shards only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from alchemist_data import schema
from alchemist_data.writer import DONE_DIR


class NotARunError(ValueError):
    pass


def committed_files(run_dir: str | os.PathLike[str], table: str) -> list[Path]:
    """Parquet files of ``table`` that belong to committed shards (a marker exists)."""
    run = Path(run_dir)
    schema.table_schema(table)  # a clear error for an unknown table
    if not (run / DONE_DIR).is_dir():
        raise NotARunError(f"{str(run)!r} is not a curated run folder (no {DONE_DIR}/); run `alchemist curate` first")
    shards = sorted(p.stem for p in (run / DONE_DIR).glob("part-*.json"))
    return [run / table / f"{s}.parquet" for s in shards if (run / table / f"{s}.parquet").exists()]


def read_table(run_dir: str | os.PathLike[str], table: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole table of a run as Arrow, with the contract schema (empty when nothing is committed)."""
    files = committed_files(run_dir, table)
    if not files:
        out = schema.empty_table(table)
        return out.select(columns) if columns else out
    return pa.concat_tables([pq.read_table(f, columns=columns, schema=schema.table_schema(table)) for f in files])


def connect(
    run_dir: str | os.PathLike[str], con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views ``clips``, ``entities``, ``backgrounds``, ``rejects`` over the run."""
    con = con or duckdb.connect()
    for table, table_schema in schema.TABLES.items():
        files = committed_files(run_dir, table)
        if files:
            listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.sql(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
        else:
            con.register(table, table_schema.empty_table())
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
