"""Inference: AlchemistPipeline, `alchemist train` / `alchemist generate` CLI, and the demo hook."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alchemist_model.configs import TrainConfig
from alchemist_model.flow import combine_guidance
from alchemist_model.pipeline import AlchemistPipeline
from alchemist_model.testing import _crop
from alchemist_model.train import train
from tests.model.helpers import tiny_train_config, train_args


@pytest.fixture(scope="module")
def trained_run(curated_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    train(tiny_train_config(steps=3, lr=1e-2, grad_clip=1.0), curated_run, run, progress=False)
    return run


@pytest.fixture(scope="module")
def ref_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("refs") / "dog.png"
    Image.fromarray(_crop((200, 40, 40), 30, 0)).save(path)
    return path


def _cli():
    import typer

    from pipelines import generate, train

    app = typer.Typer()
    train.register(app)
    generate.register(app)
    return app


def _generate_args(run: Path, prompt: str, output: Path, *options: str) -> list[str]:
    return ["generate", "--checkpoint", str(run), "--prompt", prompt, *options, "--output", str(output)]


def test_pipeline_generates_frames_and_mp4(trained_run, ref_png, tmp_path):
    pipe = AlchemistPipeline.from_run(trained_run, device="cpu")
    prompt = "A man in a red shirt walks a dog across the park."
    conditions = {
        "references": {"dog": [ref_png, ref_png]},
        "background": ref_png,
        "background_word": "park",
        "num_inference_steps": 3,
        "progress": False,
    }
    out = pipe(prompt, output_path=tmp_path / "out.mp4", **conditions)
    assert out.frames.shape == (9, 48, 64, 3) and out.frames.dtype == np.uint8
    with av.open(str(out.path)) as container:
        assert container.streams.video[0].width == 64
        assert sum(1 for _ in container.decode(video=0)) == 9
    again = pipe(prompt, **conditions)
    assert np.array_equal(again.frames, out.frames)  # seeded
    longer = pipe(prompt, num_frames=17, width=96, height=64, num_inference_steps=2, progress=False)
    assert longer.frames.shape == (17, 64, 96, 3)


def test_pipeline_uses_the_three_evaluation_cfg(trained_run, ref_png, monkeypatch):
    """One step from t=1 to 0: the update equals the hand combination of the three separate predictions."""
    pipe = AlchemistPipeline.from_run(trained_run, device="cpu")
    with torch.no_grad():  # make the prediction depend on every condition
        for name, param in pipe.transformer.named_parameters():
            if "adaln_modulation" in name or "personalization_gate" in name or "proj_out" in name:
                param.add_(torch.randn_like(param) * 0.1)
    captured = {}
    original = pipe.transformer.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        captured["prediction"] = out.sample.clone()
        captured["latents"] = args[0][:1].clone()
        return out

    monkeypatch.setattr(pipe.transformer, "forward", spy)
    decoded = {}
    monkeypatch.setattr(pipe.components.vae, "decode", lambda z: decoded.setdefault("z", z) * 0)
    guidance = {"text_guidance_scale": 8.0, "image_guidance_scale": 3.0}
    pipe("A dog runs.", references={"dog": [ref_png]}, num_inference_steps=1, progress=False, **guidance)
    full, no_text, no_image = captured["prediction"].chunk(3)
    assert not torch.allclose(full, no_text) and not torch.allclose(full, no_image)
    expected = captured["latents"] - 1.0 * combine_guidance(full, no_text, no_image, *guidance.values())
    torch.testing.assert_close(decoded["z"], expected)


def test_pipeline_input_errors(trained_run, ref_png, tmp_path):
    pipe = AlchemistPipeline.from_run(trained_run, device="cpu")
    with pytest.raises(ValueError, match="'cat' does not occur in the prompt"):
        pipe("A dog runs.", references={"cat": [ref_png]}, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        pipe("A dog runs.", references={"dog": [tmp_path / "missing.png"]}, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="at most 6"):
        pipe("A dog runs.", references={"dog": [ref_png] * 7}, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe("A dog runs.", width=50, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="4k\\+1"):
        pipe("A dog runs.", num_frames=10, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match="not a training run"):
        AlchemistPipeline.from_run(tmp_path)


def test_cli_train_and_generate(curated_run, ref_png, tmp_path):
    runner = CliRunner()
    app = _cli()
    run = tmp_path / "run"
    options = ["--set", "data.augment=false", "--set", "image_encoder=clip"]
    result = runner.invoke(app, train_args(curated_run, run, "--steps", "2", *options))
    assert result.exit_code == 0, result.output
    assert (run / "metrics.jsonl").read_text().count("\n") == 2
    saved = TrainConfig.load(run / "config.json")
    assert saved.data.augment is False and saved.image_encoder == "clip"
    result = runner.invoke(app, train_args(curated_run, run, "--steps", "3", "--resume"))
    assert result.exit_code == 0, result.output
    assert (run / "metrics.jsonl").read_text().count("\n") == 3
    out = tmp_path / "gen.mp4"
    refs = ["--ref", f"dog={ref_png}", "--ref", f"man={ref_png}"]
    result = runner.invoke(
        app, _generate_args(run, "A man walks a dog.", out, *refs, "--steps", "2", "--frames", "5", "--size", "32x32")
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    bad_word = runner.invoke(app, _generate_args(run, "A man walks.", out, "--ref", f"dog={ref_png}"))
    assert bad_word.exit_code != 0 and "'dog' does not occur in the prompt" in bad_word.output
    missing = runner.invoke(app, _generate_args(run, "A dog.", out, "--ref", "dog=/no/such.png"))
    assert missing.exit_code != 0 and "/no/such.png" in missing.output
    bad_set = runner.invoke(app, train_args(curated_run, tmp_path / "r2", "--set", "nope=1"))
    assert bad_set.exit_code != 0 and "unknown config field" in bad_set.output


def test_demo_hook_writes_a_video_named_by_clip_id(curated_run, tmp_path):
    from pipelines.train import demo_train_and_generate

    summary = demo_train_and_generate(curated_run, tmp_path / "demo", steps=4)
    video = Path(summary["video"])
    assert video == tmp_path / "demo" / "generated" / f"{summary['clip_id']}.mp4"
    assert video.stat().st_size > 0
    assert summary["reference_words"] and all(w in summary["prompt"] for w in summary["reference_words"])
    assert Path(summary["metrics"]).exists()


def _spy_forward(pipe, monkeypatch) -> tuple[list, object]:
    calls: list = []
    original = pipe.transformer.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, kwargs, out.sample.clone()))
        return out

    monkeypatch.setattr(pipe.transformer, "forward", spy)
    return calls, original


def test_generation_without_references_takes_the_training_drop_path(trained_run, monkeypatch):
    """No references = training's dropped image condition (zeroed embeddings), not a skipped cross-attention."""
    pipe = AlchemistPipeline.from_run(trained_run, device="cpu")
    with torch.no_grad():  # a trained gate is non-zero: then skipping the branch changes the output
        for name, param in pipe.transformer.named_parameters():
            if "personalization_gate" in name or "attn3" in name:
                param.add_(torch.randn_like(param) * 0.1)
    calls, original = _spy_forward(pipe, monkeypatch)
    pipe("A dog runs.", num_inference_steps=1, progress=False)
    (latents, t), kwargs, prediction = calls[0]
    assert kwargs["reference_keep"].tolist() == [0.0, 0.0, 0.0]
    text, mask = kwargs["encoder_hidden_states"], kwargs["encoder_attention_mask"]
    with torch.no_grad():
        dropped = original(
            latents,
            t,
            text,
            mask,
            reference_image_tokens=torch.randn(3, 2, 16, 32),
            reference_word_tokens=torch.randn(3, 2, 3, 32),
            reference_mask=torch.ones(3, 2).bool(),
            reference_keep=torch.zeros(3),
        ).sample
        skipped = original(latents, t, text, mask).sample
    torch.testing.assert_close(prediction, dropped)  # whatever the dropped references were
    assert (prediction - skipped).norm() > 1e-3 * prediction.norm()


def test_stage1_run_generates_text_to_video_only(curated_run, ref_png, tmp_path, monkeypatch):
    run = tmp_path / "stage1"
    train(TrainConfig(profile="tiny", steps=1, stage=1, checkpoint_every=1), curated_run, run, progress=False)
    pipe = AlchemistPipeline.from_run(run, device="cpu")
    with pytest.raises(ValueError, match="stage I"):
        pipe("A dog runs.", references={"dog": [ref_png]}, num_inference_steps=1, progress=False)
    calls, _ = _spy_forward(pipe, monkeypatch)
    pipe("A dog runs.", num_inference_steps=1, progress=False)
    assert "reference_image_tokens" not in calls[0][1]  # the path stage-I training took


def test_sampling_feeds_each_branch_its_previous_estimate(trained_run, ref_png, monkeypatch):
    """Inference self-conditions like training: zeros first, then each branch's own x_t - t v of the last step."""
    pipe = AlchemistPipeline.from_run(trained_run, device="cpu")
    assert pipe.transformer.config.self_conditioning
    calls, _ = _spy_forward(pipe, monkeypatch)
    pipe("A dog runs.", references={"dog": [ref_png]}, num_inference_steps=3, progress=False)
    assert len(calls) == 3
    assert torch.count_nonzero(calls[0][1]["self_conditioning_latents"]) == 0
    for (prev_args, _, prev_pred), (_, kwargs, _) in zip(calls, calls[1:], strict=False):
        latents, t = prev_args
        expected = latents - t.view(-1, 1, 1, 1, 1) * prev_pred
        torch.testing.assert_close(kwargs["self_conditioning_latents"], expected)
