import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alchemist_data import catalog, schema
from alchemist_data.writer import OutputNotWritableError, RunWriter


def _clip(cid: str) -> dict:
    return {
        "clip_id": cid,
        "video": f"{cid}.mp4",
        "caption": "A man walks a dog.",
        "start_s": 0.0,
        "end_s": 2.0,
        "duration_s": 2.0,
        "ref_times_s": [0.1, 1.0, 1.9],
        "subject_words": ["man"],
        "shard": "part-00000",
    }


def _tables(cids: list[str]) -> dict[str, pa.Table]:
    clips = pa.Table.from_pylist([_clip(c) for c in cids])
    return {
        "clips": clips,
        "entities": schema.empty_table("entities"),
        "backgrounds": schema.empty_table("backgrounds"),
        "rejects": pa.Table.from_pylist(
            [{"video": "bad.mp4", "stage": "frames", "reason": "missing_file", "detail": "no such file"}]
        ),
    }


def test_conform_fills_nullable_and_names_missing_required():
    t = schema.conform(
        pa.table(
            {"clip_id": ["a"], "video": ["v"], "caption": ["c"], "start_s": [0.0], "end_s": [1.0], "duration_s": [1.0]}
        ),
        "clips",
    )
    assert t.schema == schema.CLIPS and t.column("fps").null_count == 1
    with pytest.raises(ValueError, match="caption"):
        schema.conform(pa.table({"clip_id": ["a"], "video": ["v"]}), "clips")


def test_committed_shards_are_readable_by_duckdb_pyarrow_polars(tmp_path):
    w = RunWriter(tmp_path / "run")
    w.prepare()
    w.commit_shard("part-00000", _tables(["a", "b"]), num_input_rows=3)
    w.commit_shard("part-00001", _tables(["c"]), num_input_rows=2)
    assert set(w.done_shards()) == {"part-00000", "part-00001"}
    assert catalog.read_table(tmp_path / "run", "clips").column("clip_id").to_pylist() == ["a", "b", "c"]
    n = catalog.query(tmp_path / "run", "SELECT count(*) AS n FROM rejects").to_pylist()[0]["n"]
    assert n == 2
    files = [str(p) for p in (tmp_path / "run" / "clips").glob("*.parquet")]
    assert pq.read_table(files[0]).schema.equals(schema.CLIPS)
    assert pl.read_parquet(files).height == 3
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/run/clips/*.parquet'").fetchall()[0][0] == 3


def test_recommit_overwrites_and_uncommitted_shards_are_invisible(tmp_path):
    w = RunWriter(tmp_path)
    w.prepare()
    w.commit_shard("part-00000", _tables(["a", "b"]), num_input_rows=3)
    w.commit_shard("part-00000", _tables(["a", "b"]), num_input_rows=3)  # a resumed run redoes the shard
    # A crash after writing a table file but before the marker leaves an invisible shard.
    pq.write_table(
        schema.conform(pa.Table.from_pylist([_clip("zz")]), "clips"), tmp_path / "clips" / "part-00009.parquet"
    )
    assert catalog.read_table(tmp_path, "clips").num_rows == 2
    assert catalog.query(tmp_path, "SELECT count(*) AS n FROM clips").to_pylist() == [{"n": 2}]


def test_empty_run_has_typed_empty_views(tmp_path):
    w = RunWriter(tmp_path)
    w.prepare()
    out = catalog.query(tmp_path, "SELECT category, count(*) FROM entities GROUP BY 1")
    assert out.num_rows == 0
    assert all(isinstance(rows, list) for rows in catalog.stats(tmp_path).values())


def test_not_a_run_and_bad_sql_are_clear_errors(tmp_path):
    with pytest.raises(catalog.NotARunError, match="alchemist curate"):
        catalog.query(tmp_path, "SELECT 1")
    RunWriter(tmp_path).prepare()
    with pytest.raises(ValueError, match="query failed"):
        catalog.query(tmp_path, "SELECT nope FROM clips")


def test_unwritable_output_fails_before_work():
    # /proc refuses new folders even to root, which is who CI runs as.
    with pytest.raises(OutputNotWritableError, match="--output"):
        RunWriter("/proc/alchemist-run").prepare()


def test_output_path_that_is_a_file_fails_clearly(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputNotWritableError, match="not writable"):
        RunWriter(f / "run").prepare()
