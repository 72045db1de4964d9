"""Training: rectified flow on curated clips, stage I / stage II, exact resume, single process or Ray Train.

Reads top to bottom: ``train()`` builds the run directory, components, model, optimizer and data, then loops
``training_step``; ``train_ray.train_ray()`` (train_ray.py) runs the same loop in each Ray Train worker (DDP, or
FSDP for profiles with ``parallelism="fsdp"``), each rank reading its own shard of the sampler.

Run directory (``RUN``):

* ``config.json`` (resolved TrainConfig), ``profile.json`` (resolved ModelProfile);
* ``encoders/``: frozen components (saved in full when random, referenced by id/path when real);
* ``checkpoints/step-XXXXXXXX/{transformer/, state.pt}`` + ``checkpoints/latest`` (name of the newest; see
  checkpoint.py); state.pt holds optimizer, LR scheduler, step, RNG states, data position and the EMA weights;
* ``metrics.jsonl``: one line per logged step (loss, lr, grad_norm, samples_per_s, tokens_per_s); a resume first
  drops the rows logged after the checkpoint it continues from.

Exact resume: the training RNG is a dedicated ``torch.Generator`` saved with the checkpoint; data samples depend
only on (seed, epoch, index) and the sampler (or the bucket sampler, which replays its per-step choices) restarts
at the saved position, so ``--resume`` reproduces the uninterrupted run's losses bit for bit on the same machine.
The schedule (warm-up, stage-II phase length) is fixed in config.json at the first start.

Inputs per step: the target clip decoded and VAE-encoded and the caption T5-encoded on the fly, or read from an
``alchemist encode`` folder (``latents``, see latents.py); reference images always on the fly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alchemist_model.buckets import BucketBatchSampler
from alchemist_model.checkpoint import (
    latest_checkpoint,
    load_backbone,
    load_model_weights,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from alchemist_model.configs import RANDOM_INIT, ModelProfile, TrainConfig, model_profile
from alchemist_model.data import AlchemistDataset, ResumableSampler, collate_samples
from alchemist_model.encoders import (
    Components,
    TextConditions,
    encode_conditions,
    load_components,
    load_image_encoder,
)
from alchemist_model.flow import add_noise, sample_timesteps, time_shift_for, velocity_target
from alchemist_model.transformer_alchemist import AlchemistTransformer3DModel


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]
    checkpoint: Path | None


def open_latents(latents: str | Path | None, cfg: TrainConfig, profile: ModelProfile) -> Any:
    """The ``alchemist encode`` folder a run trains from (checked against the run's settings), or None."""
    if latents is None:
        return None
    from alchemist_model.latents import LatentStore

    store = LatentStore(latents)
    store.check(cfg, profile)
    return store


def build_dataset(data_dir: Any, cfg: TrainConfig, profile: ModelProfile, latents: Any = None) -> AlchemistDataset:
    """The training dataset of a run: the profile's sizes, the run's data config and seed; references in stage II."""
    return AlchemistDataset.for_profile(
        data_dir, profile, cfg.data, seed=cfg.seed, with_references=int(cfg.stage) == 2, latents=latents
    )


def build_transformer(profile: ModelProfile, cfg: TrainConfig, components: Components) -> AlchemistTransformer3DModel:
    kwargs = dict(profile.transformer)
    kwargs.update(
        in_channels=components.vae.latent_channels,
        out_channels=components.vae.latent_channels,
        text_dim=components.text_encoder.dim,
        cond_dim=components.image_encoder.dim,
        word_token_len=cfg.word_token_len,
        max_images=cfg.data.max_reference_images,
        use_word_tokens=cfg.use_word_tokens,
        self_conditioning=cfg.self_conditioning_prob > 0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return AlchemistTransformer3DModel(**kwargs)


def video_token_count(
    width: int, height: int, num_frames: int, components: Components, patch_size: tuple[int, int, int]
) -> int:
    frames = (num_frames - 1) // components.vae.temporal_compression + 1
    s = components.vae.spatial_compression
    return (frames // patch_size[0]) * (height // s // patch_size[1]) * (width // s // patch_size[2])


def latent_token_count(profile: ModelProfile, components: Components, patch_size: tuple[int, int, int]) -> int:
    return video_token_count(profile.width_px, profile.height_px, profile.num_frames, components, patch_size)


def set_trainable(model: AlchemistTransformer3DModel, stage: int, step: int, cfg: TrainConfig) -> str:
    """Stage I: backbone only. Stage II: personalization branch only for the first N steps, then everything."""
    personalization = {id(p) for p in model.personalization_parameters()}
    if stage == 1:
        phase = "backbone"
    elif step < cfg.stage2_cross_attn_only_steps:
        phase = "personalization_only"
    else:
        phase = "full"
    for param in model.parameters():
        is_new = id(param) in personalization
        param.requires_grad_({"backbone": not is_new, "personalization_only": is_new, "full": True}[phase])
    return phase


def training_step(
    model: torch.nn.Module,
    conditions: dict[str, torch.Tensor],
    latents: torch.Tensor,
    cfg: TrainConfig,
    shift: float,
    generator: torch.Generator,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """One rectified-flow loss with 10 % text / 10 % image condition dropout (zeroed), as in spec §4, and
    self-conditioning: with ``cfg.self_conditioning_prob`` per sample the trained pass sees the clean-latent estimate
    ``x_t - t v`` of a first pass without gradients (zeros otherwise, which is also what sampling starts from)."""
    batch_size = latents.shape[0]
    device = latents.device
    # All draws come from the CPU generator in a fixed order: resume restores it exactly.
    noise = torch.randn(latents.shape, generator=generator).to(device)
    t = sample_timesteps(batch_size, cfg.timestep_sampling, shift, generator, device)
    text_keep = (torch.rand(batch_size, generator=generator) >= cfg.text_drop_prob).to(device)
    image_keep = (torch.rand(batch_size, generator=generator) >= cfg.image_drop_prob).to(device)
    noisy = add_noise(latents, noise, t)
    encoder_hidden_states = conditions["encoder_hidden_states"] * text_keep[:, None, None].to(latents.dtype)
    inputs = {
        "reference_image_tokens": conditions.get("reference_image_tokens"),
        "reference_word_tokens": conditions.get("reference_word_tokens"),
        "reference_mask": conditions.get("reference_mask"),
        "reference_keep": image_keep if "reference_image_tokens" in conditions else None,
    }
    if cfg.self_conditioning_prob > 0:
        use_estimate = (torch.rand(batch_size, generator=generator) < cfg.self_conditioning_prob).to(device)
        estimate = torch.zeros_like(latents)
        if bool(use_estimate.any()):
            with torch.no_grad(), autocast:
                first = model(
                    noisy,
                    t,
                    encoder_hidden_states,
                    conditions["encoder_attention_mask"],
                    **inputs,
                    self_conditioning_latents=estimate,
                ).sample
            clean = noisy - t.view(-1, *([1] * (latents.ndim - 1))) * first.float()
            estimate = torch.where(use_estimate.view(-1, *([1] * (latents.ndim - 1))), clean, estimate)
        inputs["self_conditioning_latents"] = estimate
    with autocast:
        prediction = model(noisy, t, encoder_hidden_states, conditions["encoder_attention_mask"], **inputs).sample
    return F.mse_loss(prediction.float(), velocity_target(latents, noise))


def check_stage2_start(cfg: TrainConfig) -> None:
    """Stage II starts from a stage-I backbone: refuse a silent random one (called before any model is loaded).

    Stage II first trains only the new personalization branch with the backbone frozen; on random weights those
    steps learn nothing useful. Outside the tiny profile a random backbone must be asked for (``init_from=random``).
    """
    if int(cfg.stage) != 2 or (cfg.init_from and cfg.init_from != RANDOM_INIT):
        return
    if not cfg.init_from and cfg.profile != "tiny":
        raise ValueError(
            f"stage 2 (personalization) of profile {cfg.profile!r} needs a stage-I backbone, and init_from is empty: "
            "pass --set init_from=RUN (a stage-I run folder or transformer folder), train stage I first with "
            "--stage 1, or ask for a random frozen backbone explicitly with --set init_from=random (debugging only)"
        )
    why = "init_from=random was asked for" if cfg.init_from else "init_from is empty, as only tiny allows"
    print(
        f"[alchemist] WARNING: stage 2 starts from a RANDOM backbone ({why}); the first "
        f"{cfg.stage2_cross_attn_only_steps} steps train only the personalization branch on it. "
        "Pass --set init_from=RUN with a stage-I run for a real start.",
        file=sys.stderr,
        flush=True,
    )


def prepare_run(
    cfg: TrainConfig, output_dir: Path, resume: bool, latents: str | Path | None = None
) -> tuple[TrainConfig, ModelProfile, Components | None]:
    """Create or reopen RUN: resolved config + profile + frozen components saved next to the checkpoints.

    The components come back when this call built them; on resume they are in ``RUN/encoders`` and the caller that
    trains loads them (None here: Ray Train's driver only prepares the run, and each worker loads its own).

    Returns the run's config: at the first start ``cfg`` with its schedule resolved (and saved); on resume the saved
    config with this call's ``steps`` (the schedule stays as saved, only the end point moves). With ``latents`` (an
    ``alchemist encode`` folder) the run takes that folder's text encoder and VAE, which made the stored tensors,
    and the target window at each clip's start (what the latents hold).
    """
    output_dir = Path(output_dir)
    profile = model_profile(cfg.profile)
    cfg = cfg.resolved()
    if latents is not None and cfg.data.clip_start != "start":
        print(
            "[alchemist] note: --latents holds each clip's window at its start: data.clip_start=start",
            file=sys.stderr,
            flush=True,
        )
        cfg.data.clip_start = "start"
    if resume and (output_dir / "config.json").exists():
        saved = TrainConfig.load(output_dir / "config.json").resolved()
        if {**saved.to_dict(), "steps": cfg.steps} != cfg.to_dict():
            raise ValueError(
                f"--resume: {output_dir}/config.json differs from this run's config (only --steps may "
                "change); use a new --output or the same options"
            )
        return cfg, profile, None
    if not resume and latest_checkpoint(output_dir) is not None:
        raise ValueError(f"{output_dir} already holds checkpoints: pass --resume to continue, or a new --output")
    check_stage2_start(cfg)
    store = open_latents(latents, cfg, profile)
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(output_dir / "config.json")
    (output_dir / "profile.json").write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    if store is None:
        components = load_components(profile, cfg.image_encoder, seed=cfg.seed)
    else:
        components = Components.load_saved(store.root / "encoders")
        if components.image_encoder.kind != cfg.image_encoder:  # the image encoder plays no part in the latents
            components.image_encoder, source = load_image_encoder(profile, cfg.image_encoder, cfg.seed)
            components.sources = {**(components.sources or {}), "image_encoder": source}
    components.save(output_dir / "encoders")
    return cfg, profile, components


def training_batches(
    cfg: TrainConfig,
    data_dir: Path,
    profile: ModelProfile,
    components: Components,
    patch_size: tuple[int, int, int],
    batch_size: int,
    step: int,
    rank: int = 0,
    world_size: int = 1,
    latents: str | Path | None = None,
) -> torch.utils.data.DataLoader:
    """This rank's batches from ``step`` on: the profile's size (``ResumableSampler``) or buckets (Table 6)."""
    store = open_latents(latents, cfg, profile)
    dataset = build_dataset(data_dir, cfg, profile, latents=store)
    loader_args = {
        "num_workers": cfg.num_data_workers,
        "collate_fn": collate_samples,
        "persistent_workers": cfg.num_data_workers > 0,
    }
    if rank == 0 and dataset.num_missing_latents:
        print(
            f"[alchemist] {dataset.num_missing_latents} clips have no stored latents (encode errors) and are left out",
            file=sys.stderr,
            flush=True,
        )
    if dataset.buckets is None:
        sampler = ResumableSampler(len(dataset), cfg.seed, start=step * batch_size, rank=rank, world_size=world_size)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_args)

    def tokens(width: int, height: int, num_frames: int) -> int:
        return video_token_count(width, height, num_frames, components, patch_size)

    budget = batch_size * tokens(profile.width_px, profile.height_px, profile.num_frames)
    sizes = dataset.buckets.batch_sizes(budget, tokens)
    if rank == 0:
        print(f"[alchemist] buckets: {dataset.buckets.describe()}", file=sys.stderr, flush=True)
    sampler = BucketBatchSampler(dataset.buckets, sizes, start_step=step, rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **loader_args)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the metrics rows a killed run logged after its last checkpoint: the resumed run logs them again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by the kill
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(x + "\n" for x in kept))
    os.replace(tmp, path)


def run_training_loop(
    cfg: TrainConfig,
    data_dir: Path,
    output_dir: Path,
    profile: ModelProfile,
    components: Components,
    resume: bool,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    batch_source: Callable[[int], Any] | None = None,
    latents: str | Path | None = None,
) -> TrainResult:
    """The training loop; ``batch_source(start_step)`` may replace the DataLoader with another batch iterator."""
    output_dir = Path(output_dir)
    is_main = rank == 0
    batch_size = cfg.batch_size or profile.batch_size
    stage = int(cfg.stage)
    if cfg.ema_decay is not None and world_size > 1 and profile.parallelism == "fsdp":
        raise ValueError("ema_decay with FSDP is not supported (the EMA copy is kept unsharded); unset ema_decay")
    components.to(device)

    model = build_transformer(profile, cfg, components)
    if cfg.init_from and cfg.init_from != RANDOM_INIT and not resume:
        load_backbone(model, cfg.init_from)
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else profile.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(device)
    model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.resolved().warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    step = 0
    ema: dict[str, torch.Tensor] | None = None
    if cfg.ema_decay is not None:
        ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is not None:
        load_model_weights(model, checkpoint / "transformer")
        state = torch.load(checkpoint / "state.pt", weights_only=False, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        restore_rng(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"], generator)
        if ema is not None and (checkpoint / "transformer_ema").exists():
            from safetensors.torch import load_file

            ema = {
                k: v.float()
                for k, v in load_file(checkpoint / "transformer_ema" / "diffusion_pytorch_model.safetensors").items()
            }

    patch_size = tuple(model.config.patch_size)
    if batch_source is not None:
        batches = iter(batch_source(step))
    else:
        batches = iter(
            training_batches(
                cfg, data_dir, profile, components, patch_size, batch_size, step, rank, world_size, latents
            )
        )

    use_bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    phase = set_trainable(model, stage, step, cfg)
    wrapped = wrap_model(model) if wrap_model else model
    if resume and is_main:
        _truncate_metrics(output_dir / "metrics.jsonl", step)
    metrics_file = open(output_dir / "metrics.jsonl", "a") if is_main else None  # noqa: SIM115
    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {profile.name} stage {stage}", unit="step")
    losses: list[float] = []
    saved: Path | None = checkpoint
    try:
        while step < cfg.steps:
            new_phase = set_trainable(model, stage, step, cfg)
            if new_phase != phase:
                phase = new_phase
                # DDP/FSDP register gradient hooks for the params trainable at wrap time: wrap again.
                wrapped = wrap_model(model) if wrap_model else model
            start = time.perf_counter()
            batch = next(batches)
            text = None
            if "latents" in batch:  # precomputed (`alchemist encode`): no decode, no VAE, no text encoder
                clean = batch["latents"].to(device)
                text = TextConditions(
                    batch["text_embeddings"].to(device), batch["text_mask"].to(device), batch["word_tokens"]
                )
            else:
                clean = components.vae.encode(batch["video"].to(device))
            conditions = encode_conditions(
                components,
                batch["captions"],
                batch.get("ref_images"),
                batch.get("ref_mask"),
                batch.get("ref_words"),
                cfg.word_token_len,
                text=text,
            )
            if stage == 1:
                conditions = {k: conditions[k] for k in ("encoder_hidden_states", "encoder_attention_mask")}
            # Buckets change the size per step: the SD3 shift follows this batch's token count (spec §3.5).
            num_tokens = math.prod(n // p for n, p in zip(clean.shape[2:], patch_size, strict=True))
            shift = time_shift_for(num_tokens, cfg.shift_base_tokens, cfg.time_shift)
            num_samples = clean.shape[0]
            loss = training_step(wrapped, conditions, clean, cfg, shift, generator, autocast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hasattr(wrapped, "clip_grad_norm_"):  # FSDP: the norm needs every shard
                grad_norm = wrapped.clip_grad_norm_(cfg.grad_clip)
            else:
                trainable = [p for p in model.parameters() if p.requires_grad]
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            optimizer.step()
            scheduler.step()
            step += 1
            if ema is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        ema[k].mul_(cfg.ema_decay).add_(v.detach().float(), alpha=1 - cfg.ema_decay)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            loss_value = float(loss.detach())
            losses.append(loss_value)
            record = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "phase": phase,
                "seconds": seconds,
                "samples_per_s": num_samples * world_size / seconds,
                "tokens_per_s": num_samples * world_size * num_tokens / seconds,
            }
            if cfg.data.buckets:  # which bucket this step drew
                record.update(batch_size=num_samples, latent_shape=list(clean.shape[1:]))
            if on_step is not None:
                on_step(record)
            if metrics_file is not None and step % cfg.log_every == 0:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_value:.4f}",
                    samples_s=f"{record['samples_per_s']:.2f}",
                    tokens_s=f"{record['tokens_per_s']:.0f}",
                )
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                saved = _checkpoint(
                    output_dir,
                    model,
                    wrapped,
                    optimizer,
                    scheduler,
                    step,
                    generator,
                    batch_size,
                    ema,
                    is_main,
                    world_size,
                )
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
    return TrainResult(output_dir, step, losses, saved)


def _checkpoint(
    output_dir, model, wrapped, optimizer, scheduler, step, generator, batch_size, ema, is_main, world_size
) -> Path | None:
    rng = rng_state(generator)
    if world_size > 1:
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        # Full (gathered) state on every rank: works for DDP and FSDP alike; rank 0 writes it.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optim_state = get_state_dict(wrapped, optimizer, options=options)
        rngs: list[Any] = [None] * world_size
        dist.all_gather_object(rngs, rng)
        rng = rngs
    else:
        model_state, optim_state = model.state_dict(), optimizer.state_dict()
    if not is_main:
        return None
    model_state = {k.removeprefix("module."): v for k, v in model_state.items()}
    state = {
        "step": step,
        "optimizer": optim_state,
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "data_position": step * batch_size,  # keys consumed per rank
        "world_size": world_size,
    }
    return save_checkpoint(Path(output_dir), model_state, model, state, ema)


def train(
    cfg: TrainConfig,
    data_dir: str | Path,
    output_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    latents: str | Path | None = None,
) -> TrainResult:
    """Single-process training (CPU or one GPU); ``latents``: an ``alchemist encode`` folder of ``data_dir``."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, profile, components = prepare_run(cfg, Path(output_dir), resume, latents)
    components = components or Components.load_saved(Path(output_dir) / "encoders")
    return run_training_loop(
        cfg,
        Path(data_dir),
        Path(output_dir),
        profile,
        components,
        resume,
        dev,
        progress=progress,
        on_step=on_step,
        latents=latents,
    )


def __getattr__(name: str) -> Any:
    # ``train_ray`` and ``ray_fit`` moved to train_ray.py; the old import path keeps working (a lazy import, since
    # train_ray.py imports this module).
    if name in ("train_ray", "ray_fit"):
        from alchemist_model import train_ray as ray_module

        return getattr(ray_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
