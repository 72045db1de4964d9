"""Rectified flow (spec §3.5, §6): noising, velocity target, SD3 time shift, Euler sampling, two-term CFG.

Convention: t = 0 is data, t = 1 is noise. x_t = (1 - t) x0 + t eps; the network predicts v = eps - x0, so
x_{t - dt} = x_t - dt * v (Euler). The time shift t' = s t / (1 + (s - 1) t) moves samples toward noise for larger
token counts (SD3, Esser et al. 2024); s = sqrt(num_tokens / base_tokens) [choice], never below 1.
"""

from __future__ import annotations

import math

import torch


def time_shift_for(num_tokens: int, base_tokens: int = 1024, shift: float | None = None) -> float:
    if shift is not None:
        return float(shift)
    return max(1.0, math.sqrt(num_tokens / base_tokens))


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps(
    batch_size: int,
    method: str,
    shift: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training timesteps in (0, 1): ``uniform`` or ``logit_normal`` (sigmoid of N(0, 1)), then shifted."""
    if method == "uniform":
        t = torch.rand(batch_size, generator=generator)
    elif method == "logit_normal":
        t = torch.sigmoid(torch.randn(batch_size, generator=generator))
    else:
        raise ValueError(f"timestep_sampling {method!r}: choose uniform or logit_normal")
    return shift_time(t, shift).to(device)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def sampling_schedule(num_steps: int, shift: float) -> torch.Tensor:
    """num_steps + 1 times from 1 (noise) down to 0 (data), shifted like the training times."""
    return shift_time(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift).float()


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    return sample + (t_next - t) * velocity


def combine_guidance(
    pred_full: torch.Tensor,
    pred_no_text: torch.Tensor,
    pred_no_image: torch.Tensor,
    text_scale: float = 8.0,
    image_scale: float = 3.0,
) -> torch.Tensor:
    """Spec §6: e = e(z,cI,cT) + sT [e(z,cI,cT) - e(z,cI,0)] + sI [e(z,cI,cT) - e(z,0,cT)]."""
    return pred_full + text_scale * (pred_full - pred_no_text) + image_scale * (pred_full - pred_no_image)
