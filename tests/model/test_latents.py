"""Precomputed latents: `alchemist encode` (stage, local and Ray runners, resume) and `train --latents`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from alchemist_data import schema
from alchemist_data.catalog import read_table
from alchemist_model.configs import DataConfig, TrainConfig
from alchemist_model.data import collate_samples
from alchemist_model.encoders import Components, TextEncoder, VideoVAE, encode_text, entity_word_tokens
from alchemist_model.latents import WORK_SCHEMA, LatentEncodeConfig, LatentEncoder, LatentStore
from alchemist_model.train import train
from pipelines.encode import EncodeOptions, encode_job
from tests.model.helpers import FAST_OPTIMIZER, LONG_CAPTION, tiny_dataset, tiny_train_config

GOLDEN = Path(__file__).with_name("golden_losses.json")


def _cfg(steps: int = 1, **kwargs) -> TrainConfig:
    """A run the latents fit: they hold each clip from its start."""
    return tiny_train_config(steps, **(FAST_OPTIMIZER | {"data": DataConfig(clip_start="start")} | kwargs))


@pytest.fixture(scope="module")
def latents_dir(curated_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("latents") / "latents"
    encode_job(EncodeOptions(str(curated_run), str(out), runner="local"), progress=False)
    return out


def test_encode_writes_committed_resumable_shards(curated_run, latents_dir, tmp_path):
    info = json.loads((latents_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["counts"] == {"rows": 3, "errors": 0}
    table = read_table(latents_dir, "latents")
    assert table.schema.equals(schema.LATENTS) and sorted(table.column("clip_id").to_pylist()) == [
        "clip0000",
        "clip0001",
        "clip0002",
    ]
    row = table.to_pylist()[0]
    assert (row["width_px"], row["height_px"], row["num_frames"], row["latent_shape"]) == (64, 48, 9, [16, 3, 6, 8])
    assert (latents_dir / "encoders" / "components.json").exists()
    again = encode_job(EncodeOptions(str(curated_run), str(latents_dir), runner="local"), progress=False)
    assert again["num_shards_skipped"] == again["num_shards"] == 1  # resumed: nothing redone
    with pytest.raises(ValueError, match="other settings"):
        encode_job(
            EncodeOptions(str(curated_run), str(latents_dir), overrides=["dtype=bfloat16"], runner="local"),
            progress=False,
        )
    with pytest.raises(ValueError, match="not a curated run"):
        encode_job(EncodeOptions(str(tmp_path), str(tmp_path / "out"), runner="local"), progress=False)
    object_store = "s3://bucket/latents?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    with pytest.raises(ValueError, match="local"):  # resolved by pyarrow, refused clearly (never contacted)
        encode_job(EncodeOptions(str(curated_run), object_store, runner="local"), progress=False)


def test_stored_tensors_are_the_on_the_fly_inputs(curated_run, latents_dir):
    store = LatentStore(latents_dir)
    components = Components.load_saved(latents_dir / "encoders")
    fly = tiny_dataset(curated_run, DataConfig(clip_start="start"))
    pre = tiny_dataset(curated_run, DataConfig(clip_start="start"), latents=store)
    a, b = fly[1], pre[1]
    assert "video" not in b and a["ref_words"] == b["ref_words"]
    torch.testing.assert_close(a["ref_images"], b["ref_images"])  # references stay on the fly, same draws
    torch.testing.assert_close(b["latents"], components.vae.encode(a["video"][None])[0])
    batch_fly, batch_pre = collate_samples([fly[0], fly[1]]), collate_samples([pre[0], pre[1]])
    text = encode_text(components, batch_fly["captions"], batch_fly["ref_words"])
    torch.testing.assert_close(batch_pre["text_embeddings"], text.hidden_states)
    assert torch.equal(batch_pre["text_mask"], text.mask)
    for stored, computed in zip(batch_pre["word_tokens"], text.word_tokens, strict=True):
        for word, tokens in computed.items():
            torch.testing.assert_close(stored[word], tokens)


def test_a_word_past_the_truncation_is_stored_with_its_untruncated_tokens(latents_dir, tiny_components):
    caption = LONG_CAPTION
    row = {
        "clip_id": "long",
        "video": "/no/such/video.mp4",
        "caption": caption,
        "start_s": 0.0,
        "end_s": 1.0,
        "width_px": 64,
        "height_px": 48,
        "num_frames": 9,
        "entity_words": ["dog", "cat"],
        "shard": "part-00000",
    }
    stage = LatentEncoder(LatentEncodeConfig(), latents_dir / "encoders")
    stage.setup()
    out = stage.process_batch(pa.Table.from_pylist([row], schema=WORK_SCHEMA)).to_pylist()[0]
    assert out["error"] and "/no/such/video.mp4" in out["error"] and out["latents"] is None  # a row, not a crash
    dog_span, cat_span = out["word_token_spans"]
    assert dog_span is not None and cat_span is None and out["word_tokens"][1] is not None
    text = tiny_components.text_encoder
    expected = entity_word_tokens(text, [caption], text.encode([caption]), [["cat"]])[0]["cat"]
    stored = torch.frombuffer(bytearray(out["word_tokens"][1]), dtype=torch.float32).reshape(-1, text.dim)
    torch.testing.assert_close(stored, expected)
    assert float(stored.norm()) > 0.1


def test_first_step_loss_on_precomputed_latents_equals_the_on_the_fly_loss(curated_run, latents_dir, tmp_path):
    """Same seed, same first batch: the precomputed inputs give the on-the-fly loss (within 1 %), pinned."""
    fly = train(_cfg(), curated_run, tmp_path / "fly", progress=False)
    pre = train(_cfg(), curated_run, tmp_path / "pre", latents=latents_dir, progress=False)
    assert pre.losses[0] == pytest.approx(fly.losses[0], rel=0.01)
    golden = json.loads(GOLDEN.read_text())
    if os.environ.get("ALCHEMIST_REGEN_GOLDEN") == "1" or "first_loss_precomputed_latents" not in golden:
        golden["first_loss_precomputed_latents"] = pre.losses[0]
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    assert pre.losses[0] == pytest.approx(golden["first_loss_precomputed_latents"], rel=2e-3, abs=1e-4)
    # random clip starts cannot come from latents that hold each clip's start: the run says so and saves it
    pinned = train(_cfg(data=DataConfig()), curated_run, tmp_path / "pinned", latents=latents_dir, progress=False)
    assert TrainConfig.load(tmp_path / "pinned" / "config.json").data.clip_start == "start"
    assert pinned.losses == pre.losses


def test_training_on_latents_never_decodes_or_runs_the_vae_and_text_encoder(
    curated_run, latents_dir, tmp_path, monkeypatch
):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the precomputed path must not run this")

    monkeypatch.setattr(VideoVAE, "encode", refuse)
    monkeypatch.setattr(TextEncoder, "encode", refuse)
    monkeypatch.setattr("alchemist_model.data.decode_target_clip", refuse)
    result = train(_cfg(steps=3), curated_run, tmp_path / "run", latents=latents_dir, progress=False)
    assert result.step == 3 and all(torch.isfinite(torch.tensor(result.losses)))


def test_latents_must_match_the_run(curated_run, latents_dir, tmp_path):
    with pytest.raises(ValueError, match="data.buckets"):
        train(
            _cfg(data=DataConfig(clip_start="start", buckets="64x48x9")),
            curated_run,
            tmp_path / "r",
            latents=latents_dir,
            progress=False,
        )
    with pytest.raises(ValueError, match="not an `alchemist encode` output"):
        train(_cfg(), curated_run, tmp_path / "r2", latents=tmp_path, progress=False)


def test_bad_videos_become_error_rows_and_buckets_get_a_row_per_size(tmp_path):
    from alchemist_model.testing import write_tiny_curated_run

    curated = write_tiny_curated_run(tmp_path / "curated", num_clips=3, sizes=[(80, 60), (48, 80), (80, 60)])
    (curated / "videos" / "clip0002.mp4").unlink()  # the video is gone since curation
    out = tmp_path / "latents"
    info = encode_job(
        EncodeOptions(str(curated), str(out), overrides=["buckets=64x48x9,64x48x17"], runner="local"), progress=False
    )
    assert info["counts"] == {"rows": 6, "errors": 2}  # 3 clips x 2 lengths; clip0002's two rows record why
    rows = read_table(out, "latents").to_pylist()
    assert {(r["clip_id"], r["width_px"], r["height_px"], r["num_frames"]) for r in rows if not r["error"]} == {
        ("clip0000", 64, 48, 9),
        ("clip0000", 64, 48, 17),
        ("clip0001", 48, 80, 9),
        ("clip0001", 48, 80, 17),
    }
    cfg = _cfg(steps=2, data=DataConfig(clip_start="start", buckets="64x48x9,64x48x17"))
    result = train(cfg, curated, tmp_path / "run", latents=out, progress=False)
    assert result.step == 2


def test_cli_encode_then_train_on_latents(curated_run, tmp_path):
    import typer

    from pipelines import encode
    from pipelines import train as train_cmds

    app = typer.Typer()
    encode.register(app)
    train_cmds.register(app)
    runner = CliRunner()
    out = tmp_path / "latents"
    result = runner.invoke(app, ["encode", str(curated_run), "--output", str(out), "--runner", "local"])
    assert result.exit_code == 0, result.output
    assert "3 (clip, size) rows, 0 errors" in result.output
    result = runner.invoke(app, ["train", "--latents", str(out), "--output", str(tmp_path / "run"), "--steps", "2"])
    assert result.exit_code == 0, result.output  # --data defaults to the curated run of the latents
    bad = runner.invoke(app, ["encode", str(curated_run), "--output", str(out), "--set", "nope=1"])
    assert bad.exit_code == 2 and "unknown config field" in bad.output
    missing = runner.invoke(app, ["train", "--output", str(tmp_path / "r2")])
    assert missing.exit_code == 2 and "--data" in missing.output


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runner_writes_the_same_latents(curated_run, latents_dir, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        out = tmp_path / "latents"
        shutil.copytree(latents_dir / "encoders", out / "encoders")  # the same (random-tiny) encoders
        encode_job(EncodeOptions(str(curated_run), str(out), runner="ray", num_workers=1), progress=False)
    finally:
        ray.shutdown()
    local = {r["clip_id"]: r for r in read_table(latents_dir, "latents").to_pylist()}
    for row in read_table(out, "latents").to_pylist():
        assert row["latents"] == local[row["clip_id"]]["latents"]
        assert row["text_embeddings"] == local[row["clip_id"]]["text_embeddings"]
