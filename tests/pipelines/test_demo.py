"""`make demo` in small: the whole product end to end, and its tables open in DuckDB, pyarrow and Polars."""

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

from pipelines.demo import run_demo


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_end_to_end_and_its_tables_open_everywhere(tmp_path):
    import ray

    try:
        result = run_demo(tmp_path / "demo", num_clips=4, num_workers=1)
    finally:
        ray.shutdown()
    curated = result["curated"]
    n_clips = result["curate_info"]["counts"]["clips"]
    assert n_clips >= 1
    assert duckdb.sql(f"SELECT count(*) FROM '{curated}/clips/*.parquet'").fetchall()[0][0] == n_clips
    assert ds.dataset(curated / "entities", format="parquet").count_rows() > 0
    assert pl.read_parquet(f"{curated}/backgrounds/*.parquet").height == n_clips
    videos = list((tmp_path / "demo" / "model" / "generated").glob("*.mp4"))
    assert len(videos) == 1
    assert (tmp_path / "demo" / "eval" / "summary.json").exists()
