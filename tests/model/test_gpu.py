"""CUDA paths (skipped without a GPU): bf16 autocast training steps and generation on the device."""

from __future__ import annotations

import math

import pytest
import torch

from alchemist_model.configs import TrainConfig
from alchemist_model.pipeline import AlchemistPipeline
from alchemist_model.train import train

pytestmark = pytest.mark.gpu


def test_bf16_training_and_generation_on_cuda(curated_run, tmp_path):
    cfg = TrainConfig(
        profile="tiny",
        steps=3,
        warmup_steps=1,
        stage2_cross_attn_only_steps=1,
        checkpoint_every=3,
        gradient_checkpointing=True,
    )
    result = train(cfg, curated_run, tmp_path / "run", device="cuda", progress=False)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    pipe = AlchemistPipeline.from_run(tmp_path / "run", device="cuda")
    assert pipe.device.type == "cuda"
    out = pipe("A man walks a dog.", num_inference_steps=2, progress=False)
    assert out.frames.shape == (9, 48, 64, 3)
    assert torch.cuda.max_memory_allocated() > 0
