"""Cluster scale: a multi-node Ray cluster on this machine, the data in an S3 store on 127.0.0.1, a worker node that
dies mid-job, a driver killed mid-job, and the Ray address rules."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from alchemist_data import catalog
from alchemist_data.runner import CurateOptions, Reporter, curate
from alchemist_data.sample_data import write_sample_corpus
from tests import media
from tests.pipelines.runs import TABLE_KEYS, sorted_table
from tests.s3 import free_port

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MB = 1024**2


SHOT_FRAMES, FPS = (50, 45, 60), 24.0  # one raw video of three shots: cuts at frames 50 and 95
NUM_MANIFEST_ROWS = 9  # 8 single-shot clips + the multi-shot video
OVERRIDES = {"shard_size": "1", "shots.mode": "split"}
MANIFEST = "s3://corpus/sample/manifest.jsonl"  # the sample corpus and the raw video, in the store


@pytest.fixture(scope="module")
def store(s3, tmp_path_factory):
    local = write_sample_corpus(tmp_path_factory.mktemp("corpus"), num_clips=8, seed=11).parent
    media.make_multishot_video(local / "raw" / "three_shots.mp4", SHOT_FRAMES, fps=FPS)
    with open(local / "manifest.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "clip_id": "raw3",
                    "video": "raw/three_shots.mp4",
                    "caption": media.CAPTION,
                }
            )
            + "\n"
        )
    for bucket in ("corpus", "runs"):
        s3.create_bucket(bucket)
    s3.upload_dir(local, "corpus", "sample")
    return s3


def _curate_store(output: str, runner: str, reporter: Reporter, **options) -> dict:
    """The tiny curation of the store's MANIFEST with OVERRIDES (one shard a row, shots split) into ``output``."""
    return curate(
        CurateOptions(manifest=MANIFEST, output=output, profile="tiny", runner=runner, overrides=OVERRIDES, **options),
        reporter=reporter,
    )


@pytest.fixture(scope="module")
def reference(store):
    """The same job on the local runner: what every cluster run must reproduce."""
    _curate_store("s3://runs/reference", "local", Reporter(enabled=False))
    return "s3://runs/reference"


def _shots_at_the_right_times(run: str) -> None:
    shots = catalog.query(run, "SELECT shot_index, start_s, end_s FROM shots WHERE clip_id = 'raw3' ORDER BY 1")
    starts = [r["start_s"] for r in shots.to_pylist()]
    cuts = [0.0, SHOT_FRAMES[0] / FPS, (SHOT_FRAMES[0] + SHOT_FRAMES[1]) / FPS]
    assert np.allclose(starts, cuts, atol=1.5 / FPS), starts
    clips = catalog.query(run, "SELECT clip_id, start_s, end_s FROM clips WHERE source_clip_id = 'raw3' ORDER BY 2")
    assert [round(r["start_s"], 3) for r in clips.to_pylist()] == [round(t, 3) for t in starts]


def _same_tables(a: str, b: str) -> None:
    for name in TABLE_KEYS:
        ta, tb = sorted_table(a, name), sorted_table(b, name)
        assert ta.num_rows == tb.num_rows, name
        for col in ta.column_names:
            ca, cb = ta.column(col), tb.column(col)
            if pa.types.is_floating(ca.type):
                # batching frames of other clips into a forward pass moves float32 scores in the last digits
                assert np.allclose(
                    ca.to_numpy(zero_copy_only=False), cb.to_numpy(zero_copy_only=False), atol=1e-4, equal_nan=True
                ), (name, col)
            else:
                assert ca.equals(cb), (name, col)


def _each_clip_once(run: str, num_rows: int) -> None:
    ids = catalog.read_table(run, "clips").column("clip_id").to_pylist()
    ids += catalog.read_table(run, "rejects").column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == num_rows
    assert NUM_MANIFEST_ROWS < num_rows  # the multi-shot video became several clips


def test_a_worker_node_dies_mid_job_and_nothing_is_lost_or_duplicated(store, reference, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.chdir(tmp_path)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 200 * MB},
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=200 * MB) for _ in range(2)]
    events: list[str] = []

    class KillANodeAfterTheFirstShard(Reporter):
        def shard_done(self, shard, counts, num_input_rows):
            super().shard_done(shard, counts, num_input_rows)
            if not events:
                cluster.remove_node(workers[0], allow_graceful=False)  # its actor dies with whatever it held
                cluster.add_node(num_cpus=1, object_store_memory=200 * MB)  # a fresh node joins
                events.append(shard)

    try:
        ray.init(address=cluster.address, include_dashboard=False)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")}
        assert len(nodes) == 2
        reporter = KillANodeAfterTheFirstShard(enabled=False)
        info = _curate_store("s3://runs/cluster", "ray", reporter, ray_address=cluster.address, num_workers=2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert events, "the node was never removed"
    assert info["num_shards"] == NUM_MANIFEST_ROWS and info["num_manifest_rows_done"] == NUM_MANIFEST_ROWS
    _each_clip_once("s3://runs/cluster", info["counts"]["clips"] + info["counts"]["rejects"])
    _same_tables(reference, "s3://runs/cluster")
    _shots_at_the_right_times("s3://runs/cluster")
    assert set(info["stages"]) >= {"frames", "entities", "grounding", "segmentation", "crops", "background"}
    assert info["slowest_stage"] in info["stages"]
    assert info["driver_bytes_per_input_row"] < 2048
    assert list(tmp_path.iterdir()) == []  # the run went to the store, not to local disk


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_a_killed_driver_resumes_to_identical_tables(store, reference):
    args = (
        "curate",
        MANIFEST,
        "-o",
        "s3://runs/killed",
        "--profile",
        "tiny",
        "--set",
        "shard_size=1",
        "--set",
        "shots.mode=split",
        "--runner",
        "local",
    )
    proc = _cli(*args)
    try:
        for _ in range(1200):  # up to 120 s for the first committed shard
            if any(k.startswith("killed/_done/") for k in store.keys("runs", "killed/")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the job ended before it could be killed:\n{proc.stdout.read()}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = sum(k.startswith("killed/_done/") for k in store.keys("runs", "killed/"))
    assert 1 <= done_before < NUM_MANIFEST_ROWS
    rerun = _cli(*args)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert f"({done_before} of {NUM_MANIFEST_ROWS} shards were already done)" in out
    _same_tables(reference, "s3://runs/killed")
    ref_rows = catalog.query(reference, "SELECT count(*) AS n FROM clips").to_pylist()[0]["n"]
    ref_rows += catalog.query(reference, "SELECT count(*) AS n FROM rejects").to_pylist()[0]["n"]
    _each_clip_once("s3://runs/killed", ref_rows)


def test_without_ray_address_a_stale_cluster_address_is_ignored(tmp_path):
    corpus = write_sample_corpus(tmp_path / "c", num_clips=2, seed=2)
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}  # what an earlier `ray start` leaves behind
    proc = _cli("curate", str(corpus), "-o", str(tmp_path / "run"), "--profile", "tiny", env=env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "done in" in out


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:{port}"])
def test_a_stale_ray_address_is_a_clear_error(tmp_path, address):
    port = free_port()
    corpus = write_sample_corpus(tmp_path / "c", num_clips=1, seed=2)
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    proc = _cli(
        "curate",
        str(corpus),
        "-o",
        str(tmp_path / "run"),
        "--profile",
        "tiny",
        "--ray-address",
        address.format(port=port),
        env=env,
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert f"--ray-address {address.format(port=port)}: nothing answers at" in out and f":{port} (a stale" in out
    assert not (tmp_path / "run").exists()  # nothing was written


def test_run_json_names_the_slowest_stage(tmp_path):
    corpus = write_sample_corpus(tmp_path / "c", num_clips=3, seed=4)
    info = curate(
        CurateOptions(manifest=str(corpus), output=str(tmp_path / "run"), profile="tiny", runner="local"),
        reporter=Reporter(enabled=False),
    )
    stages = info["stages"]
    assert stages["frames"]["rows"] == 3 and stages["frames"]["busy_s"] > 0
    assert info["slowest_stage"] == max(stages, key=lambda s: stages[s]["busy_s"])
