"""Object storage: curation reads its manifest and videos from an S3 store and writes its run there; bad stores,
credentials, buckets and URIs are clear errors before any work."""

import json
import os

import pytest
from typer.testing import CliRunner

from alchemist_data import catalog
from alchemist_data.manifest import ManifestError
from alchemist_data.runner import CurateOptions, Reporter, curate
from alchemist_data.sample_data import write_sample_corpus
from alchemist_data.storage import resolve
from alchemist_data.writer import OutputNotWritableError
from pipelines.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(s3, tmp_path_factory):
    """A corpus (manifest + videos) in the bucket ``corpus`` and an empty bucket ``runs``."""
    local = write_sample_corpus(tmp_path_factory.mktemp("corpus"), num_clips=6, seed=5).parent
    s3.create_bucket("corpus")
    s3.create_bucket("runs")
    s3.upload_dir(local, "corpus", "sample")
    return s3


def _curate(manifest: str, output: str, **kw):
    kw.setdefault("profile", "tiny")
    kw.setdefault("runner", "local")
    return curate(CurateOptions(manifest=manifest, output=output, **kw), reporter=Reporter(enabled=False))


def test_run_from_and_to_the_store_reads_back_and_resumes(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = _curate("s3://corpus/sample/manifest.jsonl", "s3://runs/r1", overrides={"shard_size": "2"})
    assert info["counts"]["clips"] + info["counts"]["rejects"] == 6
    assert list(tmp_path.iterdir()) == []  # nothing was written to local disk
    keys = store.keys("runs", "r1/")
    assert "r1/run.json" in keys and sum(k.startswith("r1/_done/") for k in keys) == 3
    clips = catalog.read_table("s3://runs/r1", "clips")
    assert clips.num_rows == info["counts"]["clips"]
    assert all(v.startswith("s3://corpus/sample/") for v in clips.column("video").to_pylist())
    n = catalog.query("s3://runs/r1", "SELECT count(*) AS n FROM entities").to_pylist()[0]["n"]
    assert n == info["counts"]["entities"]
    cli = CliRunner().invoke(app, ["query", "s3://runs/r1", "SELECT count(*) AS n FROM clips", "--format", "json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output) == [{"n": clips.num_rows}]
    stats = CliRunner().invoke(app, ["stats", "s3://runs/r1"])
    assert stats.exit_code == 0 and "reject reasons" in stats.output, stats.output
    run = json.loads(resolve("s3://runs/r1/run.json").read_text())
    assert run["status"] == "complete" and run["output"] == "s3://runs/r1"
    again = _curate("s3://corpus/sample/manifest.jsonl", "s3://runs/r1", overrides={"shard_size": "2"})
    assert again["num_shards_skipped"] == 3
    assert catalog.read_table("s3://runs/r1", "clips").num_rows == clips.num_rows  # no duplicates


def test_a_missing_manifest_object_is_named(store):
    with pytest.raises(ManifestError, match="manifest s3://corpus/nope.jsonl does not exist"):
        _curate("s3://corpus/nope.jsonl", "s3://runs/x")


def test_a_manifest_in_a_missing_bucket_is_named(store):
    with pytest.raises(ManifestError, match="bucket 'nobucket' does not exist"):
        _curate("s3://nobucket/manifest.jsonl", "s3://runs/x")


def test_an_output_bucket_that_does_not_exist_fails_before_work(store):
    with pytest.raises(OutputNotWritableError, match="s3://missing-bucket/run.*'missing-bucket' does not exist"):
        _curate("s3://corpus/sample/manifest.jsonl", "s3://missing-bucket/run")
    assert store.keys("runs", "x/") == []


def test_missing_credentials_are_named(store, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)  # not a file: no shared credentials
    with pytest.raises(ManifestError, match="s3://corpus/sample/manifest.jsonl.*no AWS credentials"):
        _curate("s3://corpus/sample/manifest.jsonl", "s3://runs/x")


def test_wrong_credentials_are_access_denied(store, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(ManifestError, match="access to s3://corpus/sample/manifest.jsonl was denied"):
        _curate("s3://corpus/sample/manifest.jsonl", "s3://runs/x")


def test_an_unreachable_store_is_named(store, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(ManifestError, match=f"cannot reach the object store at http://127.0.0.1:{port}"):
        _curate("s3://corpus/sample/manifest.jsonl", "s3://runs/x")
