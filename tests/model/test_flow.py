"""Rectified flow: noising, target, time shift, timestep sampling, Euler sampler, two-term CFG (spec §6)."""

from __future__ import annotations

import pytest
import torch

from alchemist_model.flow import (
    add_noise,
    combine_guidance,
    euler_step,
    sample_timesteps,
    sampling_schedule,
    shift_time,
    time_shift_for,
    velocity_target,
)


def test_cfg_combination_matches_hand_computed_value():
    full, no_text, no_image = torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.75])
    # 1 + 8 * (1 - 0.5) + 3 * (1 - 0.75) = 1 + 4 + 0.75
    assert combine_guidance(full, no_text, no_image, 8.0, 3.0).item() == pytest.approx(5.75)
    # with no guidance the full prediction comes back
    assert combine_guidance(full, no_text, no_image, 0.0, 0.0).item() == 1.0


def test_noising_and_velocity():
    x0, eps = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    t = torch.tensor([0.0, 1.0])
    noisy = add_noise(x0, eps, t)
    assert noisy[0].tolist() == [2.0] * 3 and noisy[1].tolist() == [-1.0] * 3
    v = velocity_target(x0, eps)
    # Euler from t=1 (noise) to t=0 with the exact velocity lands on the data
    torch.testing.assert_close(euler_step(eps, v, 1.0, 0.0), x0)


def test_time_shift():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert shift_time(t, 1.0).tolist() == t.tolist()
    assert shift_time(t, 3.0).tolist() == pytest.approx([0.0, 0.75, 1.0])
    assert time_shift_for(4096, 1024) == 2.0
    assert time_shift_for(100, 1024) == 1.0  # never below 1
    assert time_shift_for(100, 1024, shift=5.0) == 5.0
    schedule = sampling_schedule(4, 3.0)
    assert schedule[0] == 1.0 and schedule[-1] == 0.0 and bool((schedule[1:] < schedule[:-1]).all())


@pytest.mark.parametrize("method", ["uniform", "logit_normal"])
def test_timestep_sampling(method):
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(4000, method, 1.0, gen)
    assert float(t.min()) > 0.0 and float(t.max()) < 1.0
    assert float(t.mean()) == pytest.approx(0.5, abs=0.03)
    if method == "logit_normal":  # concentrated in the middle
        assert float(((t > 0.25) & (t < 0.75)).float().mean()) > 0.6
    shifted = sample_timesteps(4000, method, 3.0, torch.Generator().manual_seed(0))
    assert float(shifted.mean()) > float(t.mean())
    with pytest.raises(ValueError, match="timestep_sampling"):
        sample_timesteps(2, "cosine", 1.0, gen)
