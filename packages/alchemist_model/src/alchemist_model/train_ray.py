"""Ray Train: the training loop of ``train.py`` in each TorchTrainer worker (DDP, or FSDP for ``parallelism="fsdp"``).

Each rank reads its own shard of the sampler (``data_source=loader``) or of a Ray Data stream
(``data_source=ray_data``).
The run directory, its config and the frozen encoders are written once, by the driver, before the workers start.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alchemist_model.checkpoint import checkpoint_step, latest_checkpoint
from alchemist_model.configs import TrainConfig, model_profile
from alchemist_model.data import collate_samples
from alchemist_model.encoders import Components
from alchemist_model.train import build_dataset, prepare_run, run_training_loop

__all__ = ["ray_fit", "train_ray"]


def _row_to_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A Ray Data row (numpy) back into the dataset's sample dict."""
    sample = {
        "key": int(row["key"]),
        "clip_id": str(row["clip_id"]),
        "caption": str(row["caption"]),
        "video": torch.as_tensor(np.asarray(row["video"])),
    }
    if "ref_images" in row:
        sample.update(
            ref_images=torch.as_tensor(np.asarray(row["ref_images"])),
            ref_words=[str(w) for w in row["ref_words"]],
            ref_kinds=[str(k) for k in row["ref_kinds"]],
        )
    return sample


def _ray_worker_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.from_dict(config["cfg"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    profile = model_profile(cfg.profile)
    components = Components.load_saved(Path(config["output_dir"]) / "encoders")
    strategy = profile.parallelism

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model, parallel_strategy=strategy, move_to_device=False)

    batch_source = None
    if cfg.data_source == "ray_data":
        batch_size = cfg.batch_size or profile.batch_size
        shard = ray.train.get_dataset_shard("train")

        def batch_source(start_step: int):
            rows: list[dict[str, Any]] = []
            for row in shard.iter_rows():
                rows.append(_row_to_sample(row))
                if len(rows) == batch_size:
                    yield collate_samples(rows)
                    rows = []

    result = run_training_loop(
        cfg,
        Path(config["data_dir"]),
        Path(config["output_dir"]),
        profile,
        components,
        config["resume"],
        device,
        rank,
        world_size,
        wrap_model=wrap,
        progress=rank == 0,
        batch_source=batch_source,
        latents=config.get("latents"),
    )
    ray.train.report({"step": result.step, "loss": result.losses[-1] if result.losses else math.nan})


def train_ray(
    cfg: TrainConfig,
    data_dir: str | Path,
    output_dir: str | Path,
    num_workers: int,
    resume: bool = False,
    use_gpu: bool | None = None,
    latents: str | Path | None = None,
) -> Any:
    """Ray Train (TorchTrainer): one worker per GPU (or CPU process), DDP, FSDP for ``parallelism="fsdp"``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.data_source == "ray_data" and (latents is not None or cfg.data.buckets):
        raise ValueError(
            "data_source=ray_data streams the profile's size from the videos; with --latents or "
            "data.buckets use data_source=loader"
        )
    output_dir = Path(output_dir).resolve()
    # config + encoders written once, before the workers start
    cfg, _, _ = prepare_run(cfg, output_dir, resume, latents)
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    datasets = {}
    if cfg.data_source == "ray_data":
        from alchemist_model.data import to_ray_dataset

        profile = model_profile(cfg.profile)
        batch_size = cfg.batch_size or profile.batch_size
        dataset = build_dataset(data_dir, cfg, profile)
        start = 0
        checkpoint = latest_checkpoint(output_dir) if resume else None
        if checkpoint is not None:
            start = checkpoint_step(checkpoint) * batch_size * num_workers
        # One spare batch per worker: the stream's split across workers need not be perfectly even.
        remaining = max(0, cfg.steps * batch_size * num_workers - start) + batch_size * num_workers
        datasets["train"] = to_ray_dataset(dataset, remaining, start=start)
    trainer = TorchTrainer(
        _ray_worker_loop,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "data_dir": str(Path(data_dir).resolve()),
            "output_dir": str(output_dir),
            "resume": resume,
            "latents": str(Path(latents).resolve()) if latents is not None else None,
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="alchemist_train", storage_path=str(output_dir / "ray")),
        datasets=datasets or None,
    )
    return trainer


def ray_fit(trainer: Any) -> Any:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    return trainer.fit()
