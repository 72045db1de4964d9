"""CUDA paths (skipped without a GPU): bf16 autocast training steps and generation on the device."""

from __future__ import annotations

import math

import pytest
import torch

from alchemist_model.pipeline import AlchemistPipeline
from alchemist_model.train import train
from tests.model.helpers import tiny_train_config

pytestmark = pytest.mark.gpu


def test_bf16_training_and_generation_on_cuda(curated_run, tmp_path):
    cfg = tiny_train_config(steps=3, gradient_checkpointing=True)
    result = train(cfg, curated_run, tmp_path / "run", device="cuda", progress=False)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    pipe = AlchemistPipeline.from_run(tmp_path / "run", device="cuda")
    assert pipe.device.type == "cuda"
    out = pipe("A man walks a dog.", num_inference_steps=2, progress=False)
    assert out.frames.shape == (9, 48, 64, 3)
    assert torch.cuda.max_memory_allocated() > 0
