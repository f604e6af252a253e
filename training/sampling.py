"""A pure Euler sampler over EDM noise levels (k-diffusion's ``sample_euler``, Karras et al. Alg. 1
without churn). One step with ``sigmas = [sigma_max, 0]`` is SF-V's single forward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch

from runtime.sampling import karras_sigmas


def euler_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> torch.Tensor:
    """``[steps + 1]`` levels: ``steps`` Karras levels then 0, the very schedule the runtime samples
    with (equal to diffusers' for SVD), so teacher evaluation and deployment use the same levels."""
    return karras_sigmas(steps, sigma_min, sigma_max, rho)


@torch.no_grad()
def sample_euler(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the probability-flow ODE ``dx/ds = (x - D(x; s)) / s`` from ``sigmas[0]`` to 0.

    Args:
        denoiser: ``D(x [B, F, C, h, w], sigma [B]) -> x0_hat [B, F, C, h, w]``.
        x: start latents, already scaled by ``sigmas[0]`` (``randn * sigma_max``).
        sigmas: ``[n + 1]`` decreasing levels ending in 0.
    """
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sigma = s.expand(x.shape[0]).to(x.device)
        denoised = denoiser(x, sigma)
        if s_next == 0:
            x = denoised  # the last Euler step to 0 lands exactly on D(x; s)
        else:
            x = x + (x - denoised) / s * (s_next - s)
    return x
