"""The shots stage: TransNetV2 with its real weights on generated hard cuts; filter / split / off; the shots table;
the runner's accounting of a manifest row split into several clips."""

from __future__ import annotations

import functools
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from alchemist_data import catalog, schema
from alchemist_data.config import parse_overrides
from alchemist_data.models.shots import TransNetShots
from alchemist_data.profiles import curation_profile
from alchemist_data.runner import CurateOptions, Reporter, ShardPartWriter, ShardTracker, build_work_table, curate
from alchemist_data.stages import ShotsStage, split_outputs
from alchemist_data.stages.shots import ShotsConfig, _lowres_frames
from alchemist_data.writer import RunWriter
from tests import media

FPS = 24.0
SHOT_FRAMES = (44, 40, 48)  # cuts at frames 44 and 84: 1.833 s and 3.5 s
CUTS = (44, 84)


videos = media.media_fixture(
    "shots",
    multi=lambda d: str(media.make_multishot_video(d / "multi.mp4", SHOT_FRAMES, fps=FPS)),
    single=lambda d: str(media.make_still_video(d / "single.mp4", seconds=2.0, fps=FPS, object_px=2)),
    dir=lambda d: d,
)


@pytest.fixture(scope="module")
def model():
    """One loaded TransNetV2 for the module (loading takes seconds on a shared CPU); stages get it in _stage."""
    m = TransNetShots(threads=1)
    m.setup()
    return m


def _stage(model, **cfg) -> ShotsStage:
    stage = ShotsStage(ShotsConfig(**cfg))
    stage.model = model
    return stage


def _work(rows: list[dict]) -> pa.Table:
    cols = {k: [r.get(k) for r in rows] for k in ("clip_id", "video", "start_s", "end_s")}
    manifest = pa.table(
        {**cols, "caption": [media.CAPTION] * len(rows)},
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video", pa.string()),
                ("start_s", pa.float64()),
                ("end_s", pa.float64()),
                ("caption", pa.string()),
            ]
        ),
    )
    return build_work_table(manifest, shard_size=8)


def test_transnetv2_real_weights_find_the_hard_cuts_and_match_the_package(videos, model):
    import torch

    frames, times = _lowres_frames(videos["multi"])
    assert frames.shape == (sum(SHOT_FRAMES), 27, 48, 3) and times[1] == pytest.approx(1 / FPS)
    short = frames[:30]
    before, model.windows_per_forward = model.windows_per_forward, 3  # one forward mixes windows of both videos
    try:
        scores, short_scores = model.transition_scores([frames, short])
    finally:
        model.windows_per_forward = before
    starts = [int(s) for s, _ in TransNetShots.scenes(scores, 0.5)]
    assert len(starts) == 3 and starts[0] == 0
    for got, want in zip(starts[1:], CUTS, strict=True):
        assert abs(got - want) <= 1, (starts, CUTS)
    # Batched windows give the package's own predict_frames scores.
    for ours, video in ((scores, frames), (short_scores, short)):
        theirs, _ = model.model.predict_frames(torch.from_numpy(video), quiet=True)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match=r"video #0.*\(N, 27, 48, 3\)"):
        model.transition_scores([frames[:, :20]])


def test_loading_transnetv2_leaves_the_process_rngs_and_torch_flags_alone():
    import torch

    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    expect = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    det = torch.are_deterministic_algorithms_enabled()
    TransNetShots().setup()  # its constructor seeds everything with 42 and turns on deterministic algorithms
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expect
    assert torch.are_deterministic_algorithms_enabled() == det


def test_filter_mode_rejects_multi_shot_keeps_single_shot_and_isolates_a_bad_video(videos, tmp_path):
    work = _work(
        [
            {"clip_id": "multi", "video": videos["multi"]},
            {"clip_id": "single", "video": videos["single"]},
            {"clip_id": "missing", "video": str(tmp_path / "nope.mp4")},
        ]
    )
    stage = ShotsStage(ShotsConfig(mode="filter"))
    stage.setup()  # the real loading path once
    out = {r["clip_id"]: r for r in stage.process_batch(work).to_pylist()}
    assert len(out) == 3
    multi, single, missing = out["multi"], out["single"], out["missing"]
    assert (multi["reject_stage"], multi["reject_reason"]) == ("shots", "multi_shot")
    assert "3 shots" in multi["reject_detail"] and multi["num_siblings"] == 1
    assert [abs(s["start_frame"] - c) <= 1 for s, c in zip(multi["shots"][1:], CUTS, strict=True)] == [True, True]
    assert all(s["reject_reason"] == "multi_shot" and s["clip_ids"] == [] for s in multi["shots"])
    assert single["reject_reason"] is None
    assert (single["clip_id"], single["source_clip_id"], single["shot_index"], single["num_shots_in_source"]) == (
        "single",
        "single",
        0,
        1,
    )
    assert single["start_s"] is None and single["end_s"] is None  # the window is left as the manifest gave it
    assert [s["clip_ids"] for s in single["shots"]] == [["single"]]
    assert (missing["reject_stage"], missing["reject_reason"]) == ("shots", "missing_file")


def test_split_mode_cuts_at_the_shots_with_deterministic_ids_and_one_shots_table_per_source(videos, model):
    work = _work([{"clip_id": "m", "video": videos["multi"]}, {"clip_id": "s", "video": videos["single"]}])
    rows = _stage(model, mode="split").process_batch(work).to_pylist()
    assert [r["clip_id"] for r in rows] == ["m-shot000", "m-shot001", "m-shot002", "s-shot000"]
    assert [r["num_siblings"] for r in rows] == [3, 3, 3, 1]
    assert [r["source_index"] for r in rows] == [0, 0, 0, 1]
    assert [r["source_clip_id"] for r in rows] == ["m", "m", "m", "s"]
    assert [r["shot_index"] for r in rows] == [0, 1, 2, 0]
    bounds = [0, *CUTS, sum(SHOT_FRAMES)]
    for k, r in enumerate(rows[:3]):
        assert r["start_s"] == pytest.approx(bounds[k] / FPS, abs=1.01 / FPS)
        assert r["end_s"] == pytest.approx(bounds[k + 1] / FPS, abs=1.01 / FPS)
        assert r["reject_reason"] is None and r["caption"] == media.CAPTION
    assert rows[0]["end_s"] == rows[1]["start_s"] and rows[1]["end_s"] == rows[2]["start_s"]
    assert rows[2]["end_s"] == pytest.approx(sum(SHOT_FRAMES) / FPS)
    # The shots-table rows ride on the first row of each source only.
    assert [len(r["shots"] or []) for r in rows] == [3, 0, 0, 1]
    tables = split_outputs(pa.Table.from_pylist(rows), curation_profile("tiny"))
    shots = tables["shots"].to_pylist()
    assert tables["shots"].schema.equals(schema.SHOTS)
    assert [(s["clip_id"], s["shot_index"], s["num_shots"]) for s in shots] == [
        ("m", 0, 3),
        ("m", 1, 3),
        ("m", 2, 3),
        ("s", 0, 1),
    ]
    assert [s["clip_ids"] for s in shots] == [["m-shot000"], ["m-shot001"], ["m-shot002"], ["s-shot000"]]
    assert [s["end_frame"] + 1 for s in shots[:2]] == [s["start_frame"] for s in shots[1:3]]
    assert shots[0]["transnet_score"] > 0.5 and shots[2]["transnet_score"] is None  # the cut's score; none at the end
    assert all(s["max_inside_score"] < 0.5 for s in shots)
    assert tables["clips"].num_rows == 0 or set(tables["clips"].column("source_clip_id").to_pylist()) <= {"m", "s"}


def test_split_rejects_short_shots_as_siblings_and_cuts_long_ones_into_equal_pieces(videos, model):
    work = _work([{"clip_id": "m", "video": videos["multi"]}])
    # The middle shot lasts 40 frames = 1.667 s.
    rows = _stage(model, mode="split", min_s=1.75, max_s=0).process_batch(work).to_pylist()
    assert [r["clip_id"] for r in rows] == ["m-shot000", "m-shot001", "m-shot002"]
    assert [r["reject_reason"] for r in rows] == [None, "shot_too_short", None]
    assert "1.75" in rows[1]["reject_detail"] and all(r["num_siblings"] == 3 for r in rows)
    assert [s["reject_reason"] for s in rows[0]["shots"]] == [None, "shot_too_short", None]
    # Every shot is longer than max_s = 1 s: two equal pieces each, none longer than max_s.
    rows = _stage(model, mode="split", min_s=0.5, max_s=1.0).process_batch(work).to_pylist()
    assert [r["clip_id"] for r in rows] == [f"m-shot{k:03d}-part{p:02d}" for k in range(3) for p in range(2)]
    assert all(r["num_siblings"] == 6 and r["reject_reason"] is None for r in rows)
    lengths = [r["end_s"] - r["start_s"] for r in rows]
    assert all(0.5 <= d <= 1.0 + 1e-9 for d in lengths)
    assert lengths[0] == pytest.approx(lengths[1]) and lengths[4] == pytest.approx(1.0, abs=1.01 / FPS)
    assert [s["clip_ids"] for s in rows[0]["shots"]][1] == ["m-shot001-part00", "m-shot001-part01"]


def test_shots_run_inside_the_manifest_window_only(videos, model):
    # [1.0, 3.0) s holds the end of shot 0 and the start of shot 1 (cut at 1.833 s).
    work = _work([{"clip_id": "w", "video": videos["multi"], "start_s": 1.0, "end_s": 3.0}])
    rows = _stage(model, mode="split").process_batch(work).to_pylist()
    assert [r["clip_id"] for r in rows] == ["w-shot000", "w-shot001"]
    assert rows[0]["start_s"] == pytest.approx(1.0) and rows[1]["end_s"] == pytest.approx(3.0)
    assert rows[0]["end_s"] == pytest.approx(CUTS[0] / FPS, abs=1.01 / FPS)
    assert rows[0]["shots"][0]["start_frame"] == 24 and rows[0]["shots"][1]["end_frame"] == 71


def test_off_mode_passes_rows_through_and_the_cli_override_selects_split(videos):
    work = _work([{"clip_id": "m", "video": videos["multi"]}])
    stage = ShotsStage(curation_profile("tiny").shots)
    stage.setup()  # off: loads nothing
    out = stage.process_batch(work)
    assert out.num_rows == 1 and out.column("shots").to_pylist() == [None]
    assert out.column("reject_reason").to_pylist() == [None]
    profile = curation_profile("tiny", parse_overrides(["shots.mode=split", "shots.max_s=20"]))
    assert (profile.shots.mode, profile.shots.max_s) == ("split", 20.0)
    assert curation_profile("paper").shots.mode == "filter" and curation_profile("offline").shots.mode == "filter"
    with pytest.raises(ValueError, match="shots.mode='cut' is not one of filter, split, off"):
        curation_profile("tiny", {"shots.mode": "cut"})
    with pytest.raises(ValueError, match="at least twice shots.min_s"):
        curation_profile("tiny", {"shots.min_s": "2", "shots.max_s": "3"})


def _reject_rows(work: pa.Table, derived: dict[int, int]) -> list[dict]:
    """Finished (rejected) work rows: manifest row i becomes derived.get(i, 1) rows."""
    out = []
    for row in work.to_pylist():
        n = derived.get(row["source_index"], 1)
        for k in range(n):
            out.append(
                {
                    **row,
                    "clip_id": f"{row['clip_id']}-{k}",
                    "num_siblings": n,
                    "reject_stage": "test",
                    "reject_reason": "r",
                    "reject_detail": "d",
                }
            )
    return out


def test_collector_commits_a_shard_only_when_every_derived_row_is_back(tmp_path):
    manifest = pa.table(
        {
            "clip_id": ["a", "b", "c"],
            "video": ["v"] * 3,
            "caption": ["x"] * 3,
            "start_s": pa.array([None] * 3, pa.float64()),
            "end_s": pa.array([None] * 3, pa.float64()),
        }
    )
    work = build_work_table(manifest, shard_size=8)
    rows = _reject_rows(work, {0: 3, 2: 2})  # 3 + 1 + 2 = 6 rows for 3 manifest rows
    writer = RunWriter(tmp_path / "run")
    writer.prepare()
    commits = []
    tracker = ShardTracker(writer, {"part-00000": 3}, lambda s, c, n: commits.append((s, c, n)))
    split = functools.partial(split_outputs, profile=curation_profile("tiny"))
    part_writer = ShardPartWriter(str(tmp_path / "run"), split)
    sch = pa.Table.from_pylist(rows).schema
    # Batches cut a source's rows apart, as Ray's re-batching may: 4 rows back already reach the manifest count.
    tracker.add(part_writer(pa.Table.from_pylist(rows[:4], schema=sch)))
    assert commits == [] and tracker.pending == ["part-00000"]
    tracker.add(part_writer(pa.Table.from_pylist(rows[4:5], schema=sch)))
    assert commits == []
    tracker.add(part_writer(pa.Table.from_pylist(rows[5:], schema=sch)))
    assert len(commits) == 1 and commits[0][1]["rejects"] == 6 and commits[0][2] == 3
    assert tracker.pending == []
    dup = ShardTracker(writer, {"part-00000": 3}, lambda *a: None)
    with pytest.raises(RuntimeError, match="more than its 1 work row"):
        dup.add(part_writer(pa.Table.from_pylist([rows[3], rows[3]], schema=sch)))


@pytest.fixture(scope="module")
def manifest(videos):
    rows = [
        {"clip_id": "multi", "video": "multi.mp4", "caption": media.CAPTION},
        {"clip_id": "single", "video": "single.mp4", "caption": media.CAPTION},
    ]
    path = videos["dir"] / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


SPLIT_IDS = ["multi-shot000", "multi-shot001", "multi-shot002", "single-shot000"]


def _check_split_run(run, info) -> None:
    clips = catalog.read_table(run, "clips").to_pylist()
    rejects = catalog.read_table(run, "rejects").to_pylist()
    shots = catalog.read_table(run, "shots").to_pylist()
    assert sorted([c["clip_id"] for c in clips] + [r["clip_id"] for r in rejects]) == SPLIT_IDS
    assert {c["source_clip_id"] for c in clips} | {r["source_clip_id"] for r in rejects} == {"multi", "single"}
    assert info["counts"]["clips"] + info["counts"]["rejects"] == 4
    assert info["counts"]["shots"] == 4 and info["num_manifest_rows_done"] == 2
    assert sorted((s["clip_id"], s["shot_index"]) for s in shots) == [
        ("multi", 0),
        ("multi", 1),
        ("multi", 2),
        ("single", 0),
    ]
    for c in clips:  # each clip's reference frames lie inside its own shot
        assert c["start_s"] <= c["ref_times_s"][0] and c["ref_times_s"][2] < c["end_s"]
        assert c["num_shots_in_source"] == (3 if c["source_clip_id"] == "multi" else 1)


def test_curate_split_from_the_cli_every_shot_once_and_counts_exact(manifest, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    run = tmp_path / "run"
    args = [
        "curate",
        str(manifest),
        "-o",
        str(run),
        "--profile",
        "tiny",
        "--runner",
        "local",
        "--set",
        "shots.mode=split",
        "--set",
        "shard_size=1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 shots" in result.output
    info = json.loads((run / "run.json").read_text())
    _check_split_run(run, info)
    # Resuming the finished run skips both shards and duplicates nothing.
    opts = CurateOptions(
        manifest=str(manifest),
        output=str(run),
        profile="tiny",
        runner="local",
        overrides={"shots.mode": "split", "shard_size": "1"},
    )
    again = curate(opts, reporter=Reporter(enabled=False))
    assert again["num_shards_skipped"] == 2 and again["counts"] == info["counts"]
    assert catalog.read_table(run, "shots").num_rows == 4


@pytest.mark.ray
def test_curate_split_on_ray_gives_every_shot_once(manifest, tmp_path):
    import ray

    opts = CurateOptions(
        manifest=str(manifest),
        output=str(tmp_path / "ray"),
        profile="tiny",
        runner="ray",
        num_workers=1,
        overrides={"shots.mode": "split", "shots.batch_size": "1"},
    )
    try:
        info = curate(opts, reporter=Reporter(enabled=False))
    finally:
        ray.shutdown()
    _check_split_run(tmp_path / "ray", info)


@pytest.mark.gpu
def test_transnetv2_on_cuda_gives_the_cpu_scores(videos, model):
    frames, _ = _lowres_frames(videos["multi"])
    gpu = TransNetShots(device="cuda", windows_per_forward=32)
    np.testing.assert_allclose(gpu.transition_scores([frames])[0], model.transition_scores([frames])[0], atol=1e-3)
