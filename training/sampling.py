"""Training's evaluation sampler is the deployed one: the runtime's Karras schedule, initial noise
scale and Euler steps (:mod:`runtime.sampling`) over training's denoiser, whose preconditioning is
the runtime's too (:mod:`training.precondition`). Teacher evaluation therefore computes exactly
the numbers that ``runtime.generate`` computes for the same UNet, conditioning and noise; one
step with ``sigmas = [sigma_max, 0]`` is SF-V's single forward pass."""

from __future__ import annotations

import torch

from runtime.sampling import initial_noise_scale, karras_sigmas, sample_euler
from training.precondition import Conditioning, denoise


def euler_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> torch.Tensor:
    """``[steps + 1]`` float32 levels: the runtime's schedule (``steps`` Karras levels, then 0)."""
    return torch.as_tensor(karras_sigmas(steps, sigma_min, sigma_max, rho))


@torch.no_grad()
def sample(unet, noise: torch.Tensor, cond: Conditioning, sigmas: torch.Tensor) -> torch.Tensor:
    """Latents ``[B, F, C, h, w]`` sampled from unit Gaussian ``noise [B, F, C, h, w]``.

    As the runtime: the start is ``noise * sqrt(sigma_0^2 + 1)``, then Euler steps over
    ``sigmas [n + 1]`` (decreasing, ending in 0) with ``D(x; sigma)`` = :func:`denoise`.
    """
    x = noise * torch.as_tensor(initial_noise_scale(sigmas))
    return sample_euler(lambda x, sigma: denoise(unet, x, sigma, cond), x, sigmas)
