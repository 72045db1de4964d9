"""End-to-end curation: bad inputs become rejects, resume never duplicates, Ray and local agree."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from alchemist_data import catalog, schema
from alchemist_data.runner import CurateOptions, Reporter, RunMismatchError, curate
from alchemist_data.sample_data import write_sample_corpus
from alchemist_data.writer import RunWriter
from pipelines.cli import app
from tests import media
from tests.pipelines.runs import sorted_table


def _run(manifest, out, **kw):
    kw.setdefault("profile", "tiny")
    kw.setdefault("runner", "local")
    return curate(CurateOptions(manifest=str(manifest), output=str(out), **kw), reporter=Reporter(enabled=False))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_sample_corpus(tmp_path_factory.mktemp("corpus"), num_clips=10, seed=3)


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.mp4"
    media.make_video(good, seconds=1.0, fps=24, size=(160, 120))
    media.zero_bytes(d / "zero.mp4")
    media.text_as_mp4(d / "text.mp4")
    media.make_audio_only(d / "audio.m4a")
    media.make_single_frame(d / "single.mp4")
    media.make_video(d / "trunc.mp4", seconds=2.0, fps=24, size=(160, 120))
    media.make_truncated(d / "trunc.mp4")
    cap = media.CAPTION
    rows = [
        {"clip_id": "ok", "video": "good.mp4", "caption": cap},
        {"clip_id": "missing", "video": "nope.mp4", "caption": cap},
        {"clip_id": "zero", "video": "zero.mp4", "caption": cap},
        {"clip_id": "text", "video": "text.mp4", "caption": cap},
        {"clip_id": "audio", "video": "audio.m4a", "caption": cap},
        {"clip_id": "single", "video": "single.mp4", "caption": cap},
        {"clip_id": "trunc", "video": "trunc.mp4", "caption": cap},
        {"clip_id": "empty_caption", "video": "good.mp4", "caption": ""},
        {"clip_id": "no_subject", "video": "good.mp4", "caption": "A red car parked on an empty street."},
        {"clip_id": "plural", "video": "good.mp4", "caption": "A group of people dance in a hall."},
        {"clip_id": "french", "video": "good.mp4", "caption": "Un homme marche avec son chien dans le parc."},
        {"clip_id": "long", "video": "good.mp4", "caption": "A man walks a dog. " * 530},
        {"clip_id": "ok", "video": "good.mp4", "caption": cap},  # duplicate id
    ]
    path = d / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_every_bad_input_becomes_a_reject_and_the_job_goes_on(bad_manifest, tmp_path):
    info = _run(bad_manifest, tmp_path / "run")
    rejects = {r["clip_id"]: r for r in catalog.read_table(tmp_path / "run", "rejects").to_pylist()}
    clips = catalog.read_table(tmp_path / "run", "clips").column("clip_id").to_pylist()
    assert clips == ["ok"]
    expected = {  # stage: {clip_id: reason}
        "frames": {
            "missing": "missing_file",
            "zero": "empty_file",
            "text": "unreadable",
            "audio": "no_video_stream",
            "single": "too_few_frames",
        },
        "entities": {
            "empty_caption": "empty_caption",
            "no_subject": "no_subject",
            "plural": "plural_subject",
            "french": "non_english",
            "long": "caption_too_long",
        },
    }
    for stage, reasons in expected.items():
        for cid, reason in reasons.items():
            assert (rejects[cid]["stage"], rejects[cid]["reason"]) == (stage, reason), cid
            assert rejects[cid]["detail"]
    # The truncated file is either salvaged (its reference frames decode) or rejected as unreadable.
    assert "trunc" in clips or rejects["trunc"]["reason"] in ("unreadable", "truncated", "too_few_frames")
    dup = [
        r for r in catalog.read_table(tmp_path / "run", "rejects").to_pylist() if r["reason"] == "duplicate_clip_id"
    ]
    assert len(dup) == 1 and dup[0]["stage"] == "manifest"
    assert info["counts"]["clips"] + info["counts"]["rejects"] == 13


def test_tables_match_the_contract_and_reference_crops_decode(corpus, tmp_path):
    from alchemist_data.media import decode_image

    _run(corpus, tmp_path / "run")
    for name, sch in schema.TABLES.items():
        assert catalog.read_table(tmp_path / "run", name).schema.equals(sch), name
    ents = catalog.read_table(tmp_path / "run", "entities").to_pylist()
    detected = [e for e in ents if e["is_detected"]]
    assert detected, "tiny profile with threshold 0 must detect something"
    crop = decode_image(detected[0]["crop_png"])
    x0, y0, x1, y1 = detected[0]["box_xyxy_px"]
    assert crop.shape == (y1 - y0, x1 - x0, 4)
    assert all(e["is_random_model"] for e in ents)
    clips = catalog.read_table(tmp_path / "run", "clips").to_pylist()
    for c in clips:
        assert len(c["ref_times_s"]) == 3 and c["start_s"] <= c["ref_times_s"][0] < c["ref_times_s"][2] <= c["end_s"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "complete" and run["has_random_models"] is True


def test_interrupted_run_resumes_to_the_same_tables_without_duplicates(corpus, tmp_path, monkeypatch):
    _run(corpus, tmp_path / "full", overrides={"shard_size": "3"})
    original = RunWriter.commit_marker
    calls = {"n": 0}

    def crash_after_two(self, *a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the job dies between shards
        calls["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(RunWriter, "commit_marker", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(corpus, tmp_path / "resumed", overrides={"shard_size": "3"})
    monkeypatch.setattr(RunWriter, "commit_marker", original)
    assert len(RunWriter(tmp_path / "resumed").done_shards()) == 2
    info = _run(corpus, tmp_path / "resumed", overrides={"shard_size": "3"})
    assert info["num_shards_skipped"] == 2
    for name in ("clips", "entities", "backgrounds", "rejects"):
        a, b = sorted_table(tmp_path / "full", name), sorted_table(tmp_path / "resumed", name)
        assert a.drop_columns(["shard"] if "shard" in a.column_names else []).equals(
            b.drop_columns(["shard"] if "shard" in b.column_names else [])
        ), name
    # A third run does nothing and still has no duplicates.
    again = _run(corpus, tmp_path / "resumed", overrides={"shard_size": "3"})
    assert again["num_shards_skipped"] == again["num_shards"]
    ids = catalog.read_table(tmp_path / "resumed", "clips").column("clip_id").to_pylist()
    assert len(ids) == len(set(ids))


def test_resuming_with_other_settings_is_refused(corpus, tmp_path):
    _run(corpus, tmp_path / "run", limit=2)
    with pytest.raises(RunMismatchError, match="other settings"):
        _run(corpus, tmp_path / "run", limit=2, overrides={"grounding.box_threshold": "0.3"})


def test_manifest_errors_fail_before_any_work(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,text\na.mp4,hello\n")
    result = CliRunner().invoke(app, ["curate", str(bad), "--output", str(tmp_path / "out"), "--profile", "tiny"])
    assert result.exit_code == 2
    assert "video" in result.output and "caption" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
def test_ray_runner_matches_local_runner(corpus, tmp_path):
    import ray

    _run(corpus, tmp_path / "local", limit=6)
    try:
        _run(corpus, tmp_path / "ray", limit=6, runner="ray", num_workers=2)
    finally:
        ray.shutdown()
    for name in ("clips", "entities", "rejects"):
        a, b = sorted_table(tmp_path / "local", name), sorted_table(tmp_path / "ray", name)
        # The model stages run frames of several clips per forward pass, and Ray groups clips differently from the
        # local runner; a forward's batch size moves float scores by a bit or so. Everything else must be identical.
        scores = [f.name for f in a.schema if f.name.endswith("_score") and pa.types.is_floating(f.type)]
        assert a.drop_columns(scores).equals(b.drop_columns(scores)), name
        for col in scores:
            assert np.allclose(a[col].to_numpy(), b[col].to_numpy(), atol=1e-5, equal_nan=True), (name, col)


def test_cli_curate_query_stats(corpus, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["curate", str(corpus), "-o", str(out), "--profile", "tiny", "--runner", "local", "--limit", "3"]
    )
    assert r.exit_code == 0, r.output
    assert "clips" in r.output and "alchemist query" in r.output
    r = CliRunner().invoke(app, ["query", str(out), "SELECT count(*) AS n FROM clips", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["n"] + 0 >= 0
    r = CliRunner().invoke(app, ["stats", str(out)])
    assert r.exit_code == 0 and "reject reasons" in r.output
    shutil.rmtree(out)


def test_bad_setting_fails_before_any_work(corpus, tmp_path):
    result = CliRunner().invoke(
        app, ["curate", str(corpus), "-o", str(tmp_path / "out"), "--profile", "tiny", "--set", "frames.seek=nearest"]
    )
    assert result.exit_code == 2 and "frames.seek" in result.output and "keyframe" in result.output
    assert not (tmp_path / "out").exists()


def test_keyframe_seek_curates_the_same_clips(corpus, tmp_path):
    _run(corpus, tmp_path / "kf", limit=3, overrides={"frames.seek": "keyframe"})
    clips = catalog.read_table(tmp_path / "kf", "clips").to_pylist()
    assert len(clips) == 3
    assert all(c["start_s"] <= t <= c["end_s"] for c in clips for t in c["ref_times_s"])
