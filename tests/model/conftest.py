"""Shared fixtures: a tiny curated run written by the test itself and the tiny frozen components."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def curated_run(tmp_path_factory) -> Path:
    from alchemist_model.testing import write_tiny_curated_run

    return write_tiny_curated_run(tmp_path_factory.mktemp("curated"), num_clips=3)


@pytest.fixture(scope="session")
def tiny_components():
    from alchemist_model.configs import model_profile
    from alchemist_model.encoders import load_components

    return load_components(model_profile("tiny"), "dinov2", seed=0)


@pytest.fixture()
def tiny_transformer_kwargs() -> dict:
    return {
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 16,
        "cond_dim": 8,
        "word_token_len": 3,
        "max_images": 6,
    }
