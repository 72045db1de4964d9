"""Builders the model tests share: a short tiny-profile training config and the tiny profile's dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alchemist_model.configs import TrainConfig, model_profile
from alchemist_model.data import AlchemistDataset

# a caption past the text encoder's 32-token truncation: "dog" stays inside it, "cat" is cut off
LONG_CAPTION = (
    "A man walks a dog across the park and a woman rides a horse along the beach while a boy throws a "
    "ball to a girl in the garden near the road with a red car and a small bird on the grass by the "
    "water where a black cat sits."
)
# a learning rate and clip loose enough for the tiny model's loss to move within a few steps
FAST_OPTIMIZER = {"lr": 1e-3, "grad_clip": 1.0}


def tiny_train_config(steps: int, **overrides: Any) -> TrainConfig:
    """A tiny-profile run of ``steps`` steps with schedules that fit in it: one warm-up step, one step of stage II's
    cross-attention-only phase, and one checkpoint, at the end (``overrides`` replace any of these)."""
    schedule = {"warmup_steps": 1, "stage2_cross_attn_only_steps": 1, "checkpoint_every": steps}
    return TrainConfig(profile="tiny", steps=steps, **(schedule | overrides))


def train_args(data: str | Path, output: str | Path, *options: str) -> list[str]:
    """The command line of `alchemist train` on a curated run."""
    return ["train", "--data", str(data), "--output", str(output), *options]


def tiny_dataset(run_dir: str | Path, *args: Any, **kwargs: Any) -> AlchemistDataset:
    """The dataset of a curated run at the tiny profile's video and reference sizes (``args``/``kwargs``: the
    dataset's own, from ``data`` on)."""
    profile = model_profile("tiny")
    return AlchemistDataset(
        run_dir, profile.width_px, profile.height_px, profile.num_frames, profile.image_size_px, *args, **kwargs
    )
