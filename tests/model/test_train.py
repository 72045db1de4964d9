"""Training: the loss falls on a fixed batch, golden losses, exact resume, stage I / II schedules, EMA."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alchemist_model.checkpoint import latest_checkpoint
from alchemist_model.configs import TrainConfig, model_profile
from alchemist_model.data import collate_samples
from alchemist_model.encoders import encode_conditions
from alchemist_model.train import build_transformer, train, training_step
from tests.model.helpers import FAST_OPTIMIZER, tiny_dataset, tiny_train_config, train_args

GOLDEN = Path(__file__).with_name("golden_losses.json")


def _cfg(**kwargs) -> TrainConfig:
    base = {"steps": 20, "warmup_steps": 2, "stage2_cross_attn_only_steps": 4, "checkpoint_every": 10}
    return tiny_train_config(**(base | FAST_OPTIMIZER | kwargs))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run) / "transformer" / "diffusion_pytorch_model.safetensors")


def _fixed_batch(curated_run: Path, tiny_components) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The first two curated samples of the tiny profile as VAE latents and encoded conditions."""
    ds = tiny_dataset(curated_run)
    batch = collate_samples([ds[0], ds[1]])
    latents = tiny_components.vae.encode(batch["video"])
    cond = encode_conditions(
        tiny_components, batch["captions"], batch["ref_images"], batch["ref_mask"], batch["ref_words"]
    )
    return latents, cond


def test_loss_falls_by_half_on_a_fixed_batch(curated_run, tiny_components):
    """Overfit one batch (fixed latents, conditions, noise and timesteps): the model can fit what it is fed."""
    profile = model_profile("tiny")
    cfg = _cfg(text_drop_prob=0.0, image_drop_prob=0.0, timestep_sampling="uniform")
    latents, cond = _fixed_batch(curated_run, tiny_components)
    model = build_transformer(profile, cfg, tiny_components)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=cfg.betas, weight_decay=cfg.weight_decay)
    losses = []
    for _ in range(200):
        loss = training_step(
            model, cond, latents, cfg, 1.0, torch.Generator().manual_seed(0), contextlib.nullcontext()
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * losses[0], (losses[0], losses[-10:])


def test_golden_losses_for_20_deterministic_steps(curated_run, tmp_path):
    result = train(_cfg(), curated_run, tmp_path / "run", progress=False)
    assert len(result.losses) == 20
    if os.environ.get("ALCHEMIST_REGEN_GOLDEN") == "1" or not GOLDEN.exists():
        others = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}  # e.g. the precomputed-latents loss
        GOLDEN.write_text(json.dumps({**others, "config": _cfg().to_dict(), "losses": result.losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert result.losses == pytest.approx(golden, rel=2e-3, abs=1e-4)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 21))
    assert {"loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"} <= set(lines[0])
    assert lines[0]["lr"] == pytest.approx(5e-4) and lines[5]["lr"] == pytest.approx(1e-3)  # linear warm-up
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 20


def test_resume_equals_the_uninterrupted_run(curated_run, tmp_path):
    cfg = _cfg(steps=6, checkpoint_every=3, ema_decay=0.9)
    full = train(cfg, curated_run, tmp_path / "full", progress=False)
    first = train(_cfg(steps=3, checkpoint_every=3, ema_decay=0.9), curated_run, tmp_path / "split", progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, curated_run, tmp_path / "split", progress=False)
    second = train(cfg, curated_run, tmp_path / "split", resume=True, progress=False)
    assert first.losses + second.losses == full.losses  # bit-for-bit
    assert second.step == 6
    for key, value in _weights(tmp_path / "full").items():
        assert torch.equal(value, _weights(tmp_path / "split")[key]), key
    state = torch.load(latest_checkpoint(tmp_path / "split") / "state.pt", weights_only=False)
    assert state["step"] == 6 and state["data_position"] == 12
    assert (latest_checkpoint(tmp_path / "split") / "transformer_ema" / "config.json").exists()
    with pytest.raises(ValueError, match="differs"):
        train(_cfg(steps=8, lr=5e-4), curated_run, tmp_path / "split", resume=True, progress=False)


def test_stage2_trains_only_the_personalization_branch_first(curated_run, tmp_path, tiny_components):
    cfg = _cfg(steps=2, stage2_cross_attn_only_steps=2, checkpoint_every=2)
    train(cfg, curated_run, tmp_path / "run", progress=False)
    init = build_transformer(model_profile("tiny"), cfg, tiny_components).state_dict()
    trained = _weights(tmp_path / "run")
    model = build_transformer(model_profile("tiny"), cfg, tiny_components)
    new = {n for n, p in model.named_parameters() if any(p is q for q in model.personalization_parameters())}
    changed = {k for k in trained if not torch.equal(trained[k], init[k])}
    assert changed and changed <= new
    phases = [json.loads(x)["phase"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["personalization_only"] * 2
    # then the whole model
    train(
        _cfg(steps=4, stage2_cross_attn_only_steps=2, checkpoint_every=2),
        curated_run,
        tmp_path / "run",
        resume=True,
        progress=False,
    )
    trained = _weights(tmp_path / "run")
    assert any(not torch.equal(trained[k], init[k]) for k in trained if k not in new)


def test_stage1_then_stage2_from_it(curated_run, tmp_path, tiny_components):
    cfg1 = _cfg(steps=2, stage=1, checkpoint_every=2)
    train(cfg1, curated_run, tmp_path / "stage1", progress=False)
    model = build_transformer(model_profile("tiny"), cfg1, tiny_components)
    init = model.state_dict()
    new = {n for n, p in model.named_parameters() if any(p is q for q in model.personalization_parameters())}
    trained = _weights(tmp_path / "stage1")
    assert all(torch.equal(trained[k], init[k]) for k in new)  # stage I never touches the new branch
    assert any(not torch.equal(trained[k], init[k]) for k in trained if k not in new)
    cfg2 = _cfg(
        steps=1, stage=2, stage2_cross_attn_only_steps=5, init_from=str(tmp_path / "stage1"), checkpoint_every=1
    )
    train(cfg2, curated_run, tmp_path / "stage2", progress=False)
    stage2 = _weights(tmp_path / "stage2")
    assert all(torch.equal(stage2[k], trained[k]) for k in trained if k not in new)  # backbone frozen, loaded


def test_defaults_follow_spec_section_4_and_dropped_conditions_are_zeroed(curated_run, tiny_components):
    cfg = TrainConfig()
    assert (cfg.lr, tuple(cfg.betas), cfg.weight_decay, cfg.grad_clip) == (1e-4, (0.9, 0.99), 0.01, 0.05)
    assert (cfg.text_drop_prob, cfg.image_drop_prob, cfg.stage2_cross_attn_only_steps) == (0.1, 0.1, 10_000)
    profile = model_profile("tiny")
    latents, cond = _fixed_batch(curated_run, tiny_components)
    model = build_transformer(profile, _cfg(), tiny_components)
    seen = {}
    model.register_forward_pre_hook(lambda _m, args, kwargs: seen.update(args=args, kwargs=kwargs), with_kwargs=True)
    for drop, keep in ((1.0, 0.0), (0.0, 1.0)):
        training_step(
            model,
            cond,
            latents,
            _cfg(text_drop_prob=drop, image_drop_prob=drop),
            1.0,
            torch.Generator().manual_seed(0),
            contextlib.nullcontext(),
        )
        text = seen["args"][2]
        expected = torch.zeros_like(text) if drop else cond["encoder_hidden_states"]
        torch.testing.assert_close(text, expected)  # zeroed embeddings, not an empty prompt
        assert seen["kwargs"]["reference_keep"].float().tolist() == [keep, keep]


def _train_cli():
    import typer

    from pipelines import train as train_cmds

    app = typer.Typer()
    train_cmds.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer's subcommand syntax (`app train ...`)
        pass

    return app


@pytest.mark.parametrize("profile", ["small", "base", "paper"])
def test_stage2_without_a_backbone_stops_before_any_model_loads(curated_run, tmp_path, profile):
    from typer.testing import CliRunner

    out = tmp_path / "run"
    result = CliRunner().invoke(_train_cli(), train_args(curated_run, out, "--profile", profile, "--steps", "1"))
    assert result.exit_code == 2, result.output
    assert "init_from" in result.output and "--stage 1" in result.output
    assert not out.exists()  # stopped before the run folder, let alone the encoders, was made


def test_stage2_random_backbone_only_when_asked_or_tiny(curated_run, tmp_path, capsys):
    from typer.testing import CliRunner

    # Asked for explicitly: the check passes and the (offline) encoder download is what fails next.
    options = ["--profile", "small", "--steps", "1", "--set", "init_from=random"]
    result = CliRunner().invoke(_train_cli(), train_args(curated_run, tmp_path / "r", *options))
    assert result.exit_code == 2 and "could not load" in result.output, result.output
    train(_cfg(steps=1, checkpoint_every=1), curated_run, tmp_path / "tiny", progress=False)
    assert "RANDOM backbone" in capsys.readouterr().err  # tiny keeps it, loudly


def test_warmup_is_per_stage_as_in_table_6(curated_run, tmp_path):
    assert TrainConfig(stage=1).resolved().warmup_steps == 0
    assert TrainConfig(stage=2).resolved().warmup_steps == 1_000
    from pipelines.train import train_job

    assert train_job("tiny", steps=100, stage=1).warmup_steps == 0
    assert train_job("tiny", steps=100, stage=2).warmup_steps == 5
    train(_cfg(steps=1, stage=1, warmup_steps=None, checkpoint_every=1), curated_run, tmp_path / "run", progress=False)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["lr"] == pytest.approx(1e-3)  # the full rate from the first stage-I step
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_steps"] == 0  # resolved, saved


def test_resume_after_a_kill_logs_each_step_once(curated_run, tmp_path):
    class Killed(Exception):
        pass

    def kill_at_step_5(record: dict) -> None:
        if record["step"] == 5:
            raise Killed

    cfg = _cfg(steps=6, checkpoint_every=3)
    with pytest.raises(Killed):
        train(cfg, curated_run, tmp_path / "run", progress=False, on_step=kill_at_step_5)
    logged = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # step 4 came after the last checkpoint (3)
    train(cfg, curated_run, tmp_path / "run", resume=True, progress=False)
    logged = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_resume_with_more_steps_keeps_the_saved_schedule(curated_run, tmp_path):
    from typer.testing import CliRunner

    runner, app, out = CliRunner(), _train_cli(), tmp_path / "run"
    args = train_args(curated_run, out)
    assert runner.invoke(app, [*args, "--steps", "10"]).exit_code == 0
    saved = TrainConfig.load(out / "config.json")
    assert (saved.stage2_cross_attn_only_steps, saved.warmup_steps, saved.checkpoint_every) == (2, 1, 5)
    result = runner.invoke(app, [*args, "--steps", "12", "--resume"])
    assert result.exit_code == 0, result.output
    assert "personalization-only until step 2" in result.output
    resumed = TrainConfig.load(out / "config.json")
    assert (resumed.stage2_cross_attn_only_steps, resumed.warmup_steps, resumed.checkpoint_every) == (2, 1, 5)
    phases = [json.loads(x)["phase"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["personalization_only"] * 2 + ["full"] * 10
    for extra in (["--set", "lr=0.1"], ["--profile", "small"], ["--stage", "1"]):
        refused = runner.invoke(app, [*args, "--steps", "13", "--resume", *extra])
        assert refused.exit_code == 2 and "--resume" in refused.output, refused.output


def _forward_calls(model: torch.nn.Module) -> list[dict]:
    calls: list[dict] = []

    def hook(_module, args, kwargs, output):
        calls.append(
            {
                "args": args,
                "kwargs": dict(kwargs),
                "out": output.sample.detach().clone(),
                "grad": torch.is_grad_enabled(),
            }
        )

    model.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_self_conditioning_second_pass_sees_the_first_pass_estimate(curated_run, tiny_components):
    profile = model_profile("tiny")
    latents, cond = _fixed_batch(curated_run, tiny_components)
    cfg = _cfg(self_conditioning_prob=1.0)
    model = build_transformer(profile, cfg, tiny_components)
    with torch.no_grad():  # a non-trivial network, so the estimate is not zero
        for name, param in model.named_parameters():
            if "proj_out" in name or "modulation" in name or "self_conditioning" in name:
                param.normal_(0, 0.1)
    calls = _forward_calls(model)
    training_step(model, cond, latents, cfg, 1.0, torch.Generator().manual_seed(0), contextlib.nullcontext())
    assert len(calls) == 2 and not calls[0]["grad"] and calls[1]["grad"]
    first, second = calls
    assert torch.count_nonzero(first["kwargs"]["self_conditioning_latents"]) == 0
    noisy, t = first["args"][:2]
    expected = noisy - t.view(-1, 1, 1, 1, 1) * first["out"]  # x0 = x_t - t v
    torch.testing.assert_close(second["kwargs"]["self_conditioning_latents"], expected)
    assert torch.equal(second["args"][0], noisy)
    # probability 0 is the ablation: one pass, and the model has no self-conditioning input at all
    off = build_transformer(profile, _cfg(self_conditioning_prob=0.0), tiny_components)
    assert not off.config.self_conditioning
    calls = _forward_calls(off)
    training_step(
        off,
        cond,
        latents,
        _cfg(self_conditioning_prob=0.0),
        1.0,
        torch.Generator().manual_seed(0),
        contextlib.nullcontext(),
    )
    assert len(calls) == 1 and "self_conditioning_latents" not in calls[0]["kwargs"]
    assert TrainConfig().self_conditioning_prob == 0.9
