"""`alchemist train`: train the Video Alchemist model on a curated run; the demo's train-and-generate step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pipelines.common import exit_on, set_option


def train_job(profile: str = "tiny", steps: int = 100, stage: int = 2, seed: int = 0) -> Any:
    """The default training job: the profile's config with the paper's optimiser settings (spec §4)."""
    from alchemist_model.configs import TrainConfig

    if stage not in (1, 2):
        raise ValueError(f"--stage {stage}: use 1 (text-to-video backbone) or 2 (personalization)")
    cfg = TrainConfig(profile=profile, steps=steps, stage=stage, seed=seed)
    if profile == "tiny":
        # Short CPU runs: the paper's 1k warm-up and 10k cross-attention-only steps scale down with the run. These
        # lengths are fixed in RUN/config.json at the first start; a resume with another --steps keeps them.
        cfg.warmup_steps = max(1, steps // 20) if stage == 2 else 0  # spec §4: stage I has no warm-up
        cfg.stage2_cross_attn_only_steps = steps // 5
        cfg.grad_clip = 1.0  # 0.05 (paper) barely moves a 50k-parameter model in a few hundred steps
        cfg.lr = 1e-3
        cfg.checkpoint_every = max(1, steps // 2)
    return cfg


def resolve_data(data: Path | None, latents: Path | None) -> Path:
    """--data, or the curated run the --latents folder was encoded from."""
    if data is not None:
        return data
    if latents is None:
        raise ValueError("--data CURATED_RUN is required (or --latents LATENTS, whose run.json names its curated run)")
    run = latents / "run.json"
    if not run.exists():
        raise ValueError(f"--latents {latents}: no run.json; pass an `alchemist encode` output folder")
    return Path(json.loads(run.read_text())["curated"])


def resume_config(
    output: Path, steps: int, profile: str | None, stage: int | None, seed: int | None, overrides: list[str] | None
) -> tuple[Any, str | None]:
    """RUN's saved config with the new end point; the schedule (warm-up, phases, checkpoints) stays as saved.

    Returns the config and a note for the user when ``--steps`` moved the end point. Options that would change the
    saved config are refused instead of being ignored.
    """
    from alchemist_model.configs import TrainConfig

    cfg = TrainConfig.load(output / "config.json")
    if overrides:
        raise ValueError(
            f"--resume continues {output} with its saved config.json; --set cannot change it (use a new "
            "--output, or edit nothing and pass only --steps)"
        )
    for flag, given, saved in (
        ("--profile", profile, cfg.profile),
        ("--stage", stage, int(cfg.stage)),
        ("--seed", seed, cfg.seed),
    ):
        if given is not None and given != saved:
            raise ValueError(
                f"--resume: {flag} {given} differs from the run's saved {flag} {saved}; drop {flag} or "
                "use a new --output"
            )
    note = None
    if steps != cfg.steps:
        schedule = f"warm-up {cfg.warmup_steps} steps"
        if int(cfg.stage) == 2:
            schedule += f", personalization-only until step {cfg.stage2_cross_attn_only_steps}"
        note = (
            f"--steps {steps} (the run was started with {cfg.steps}): training continues to step {steps}; the "
            f"schedule saved at the first start stays ({schedule}, a checkpoint every {cfg.checkpoint_every} "
            "steps)"
        )
    cfg.steps = steps
    return cfg, note


def train_cmd(
    data: Path = typer.Option(
        None,
        "--data",
        "-d",
        help="A curated run folder (output of `alchemist curate`); "
        "with --latents it defaults to the curated run they were encoded from.",
    ),
    latents: Path = typer.Option(
        None,
        "--latents",
        help="Precomputed VAE latents and text embeddings of --data "
        "(`alchemist encode`): no video decode, VAE or text encoder per step.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder: config, encoders, checkpoints, metrics."),
    profile: str = typer.Option(
        None, "--profile", "-p", help="Model size: tiny (CPU) | small | base | paper [default: tiny]."
    ),
    steps: int = typer.Option(
        100,
        "--steps",
        help="Total optimiser steps (a resumed run continues up to this; its "
        "warm-up and phase lengths stay as saved at the first start).",
    ),
    stage: int = typer.Option(
        None,
        "--stage",
        help="1: text-to-video backbone; 2: personalization (spec §4), which "
        "needs --set init_from=STAGE1_RUN outside the tiny profile [default: 2].",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN's latest checkpoint, exactly."),
    num_workers: int = typer.Option(0, "--num-workers", help="Ray Train workers (0: single process here)."),
    seed: int = typer.Option(None, "--seed", help="[default: 0]"),
    set_: list[str] = set_option(
        "Override a config field, e.g. --set data.augment=false, --set image_encoder=clip, "
        "--set use_word_tokens=false, --set ema_decay=0.999."
    ),
) -> None:
    """Train the personalization video model (rectified flow) on curated clips; logs to RUN/metrics.jsonl."""
    with exit_on(ValueError, FileNotFoundError):
        data = resolve_data(data, latents)
        if resume and (output / "config.json").exists():
            cfg, note = resume_config(output, steps, profile, stage, seed, set_)
            if note:
                typer.secho(note, fg="yellow", err=True)
        else:
            from alchemist_data.config import apply_overrides, parse_overrides

            job = train_job(profile or "tiny", steps, 2 if stage is None else stage, seed or 0)
            cfg = apply_overrides(job, parse_overrides(set_))
        if num_workers > 0:
            from alchemist_model.train_ray import ray_fit, train_ray

            result = ray_fit(train_ray(cfg, data, output, num_workers, resume=resume, latents=latents))
            if result.error is not None:
                raise ValueError(f"Ray Train failed: {result.error}")
            typer.echo(f"ray train finished: checkpoints in {output}/checkpoints")
        else:
            from alchemist_model.train import train

            result = train(cfg, data, output, resume=resume, latents=latents)
            last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
            typer.echo(f"trained to step {result.step} (last loss {last}); checkpoint {result.checkpoint}")
    typer.echo(f"metrics: {output}/metrics.jsonl  config: {output}/config.json")
    typer.echo(
        f'generate: alchemist generate --checkpoint {output} --prompt "..." --ref "word=image.png" --output out.mp4'
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


def pick_demo_reference(curated_dir: Path) -> tuple[dict[str, Any], dict[str, list[bytes]], bytes | None]:
    """A clip with detected entities whose words are in its caption -> (clip row, {word: [crop_png]}, background)."""
    from alchemist_data.catalog import read_table
    from alchemist_model.data import word_occurs

    clips = {c["clip_id"]: c for c in read_table(curated_dir, "clips").to_pylist()}
    refs: dict[str, dict[str, list[bytes]]] = {}
    for row in read_table(curated_dir, "entities").to_pylist():
        clip = clips.get(row["clip_id"])
        if (
            clip is None
            or not row["is_detected"]
            or not row["crop_png"]
            or row["category"] not in ("subject", "object")
        ):
            continue
        if not word_occurs(clip["caption"], row["entity_word"]):
            continue
        refs.setdefault(row["clip_id"], {}).setdefault(row["entity_word"], []).append(row["crop_png"])
    if not refs:
        raise ValueError(f"{curated_dir}: no clip has a detected entity whose word is in its caption")
    clip_id = sorted(refs, key=lambda c: (-len(refs[c]), c))[0]
    backgrounds = {b["clip_id"]: b for b in read_table(curated_dir, "backgrounds").to_pylist()}
    background = backgrounds.get(clip_id, {}).get("image_jpg")
    return clips[clip_id], refs[clip_id], background


def demo_train_and_generate(curated_dir: Path, out_dir: Path, steps: int = 60) -> dict:
    """Train the tiny model briefly on the curated sample, then generate one clip from its references.

    Writes out_dir/train/ (the run) and out_dir/generated/<clip_id>.mp4 (named by clip id for the evaluator).
    """
    from alchemist_data.media import decode_image
    from alchemist_model.pipeline import AlchemistPipeline
    from alchemist_model.train import train

    curated_dir, out_dir = Path(curated_dir), Path(out_dir)
    run_dir = out_dir / "train"
    cfg = train_job("tiny", steps=steps, stage=2)
    cfg.checkpoint_every = steps
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    try:
        clip, crops, background = pick_demo_reference(curated_dir)
    except ValueError:
        # Curation found no usable entity (e.g. random detectors missed everything): a text-to-video demo instead.
        from alchemist_data.catalog import read_table

        clips = read_table(curated_dir, "clips").to_pylist()
        if not clips:
            raise ValueError(f"{curated_dir}: the curated run has no clips to train on") from None
        clip, crops, background = sorted(clips, key=lambda c: c["clip_id"])[0], {}, None
        cfg.stage, cfg.warmup_steps = 1, 0
    result = train(cfg, curated_dir, run_dir)
    # Up to 2 entity words x 2 crops (+ background) stays under the 6-image cap.
    references = {word: [decode_image(png, "RGBA") for png in pngs[:2]] for word, pngs in list(crops.items())[:2]}
    bg = decode_image(background, "RGB") if background else None
    pipe = AlchemistPipeline.from_run(run_dir)
    video = out_dir / "generated" / f"{clip['clip_id']}.mp4"
    pipe(clip["caption"], references=references, background=bg, output_path=video)
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(result.checkpoint),
        "metrics": str(run_dir / "metrics.jsonl"),
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "clip_id": clip["clip_id"],
        "prompt": clip["caption"],
        "stage": int(cfg.stage),
        "reference_words": list(references),
        "video": str(video),
        "generated_dir": str(out_dir / "generated"),
    }
    (out_dir / "train_generate.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
