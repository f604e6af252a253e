"""Noise schedules and samplers as pure functions (after k-diffusion's ``sampling.py``).

A sampler takes a denoiser ``D(x, sigma) -> x0_hat``, the initial ``x`` and a decreasing
``sigmas`` schedule ending in 0, and returns the final sample. The SF-V one-step mode is no
special path: it is the schedule ``[sigma_max, 0]``, one Euler step, which returns ``D(x, sigma_max)``.

The arithmetic is plain operators on float32 values, so the same functions run on numpy arrays
(the runtime) and on torch tensors (training's evaluation): training evaluates with exactly the
arithmetic that is deployed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Denoiser = Callable[[object, object], object]


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0) -> np.ndarray:
    """EDM's schedule (Karras et al. 2022, Eq. 5) with a final 0: ``[steps + 1]`` float32.

    ``sigma_i = (sigma_max^(1/rho) + i/(steps-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.
    Computed in float64 and rounded to float32 once, exactly as diffusers'
    ``EulerDiscreteScheduler`` with ``use_karras_sigmas=True`` (SVD's scheduler; its 'leading'
    timestep spacing does not change Karras sigmas). ``steps=1`` gives ``[sigma_max, 0]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return np.concatenate([sigmas, [0.0]]).astype(np.float32)


def sqrt(v):
    """Square root of a numpy value or a torch tensor (both correctly rounded)."""
    return v.sqrt() if hasattr(v, "sqrt") else np.sqrt(v)


def initial_noise_scale(sigmas):
    """Standard deviation of the initial latents: ``sqrt(sigma_0^2 + 1)`` (float32).

    ``x_sigma = x0 + sigma * eps`` has standard deviation ``sqrt(sigma^2 + sigma_data^2)`` with
    ``sigma_data = 1``; diffusers' ``EulerDiscreteScheduler.init_noise_sigma`` uses the same value
    for SVD's 'leading' spacing, and ``c_in(sigma_0) * x`` is then exactly unit-variance noise.
    """
    return sqrt(sigmas[0] * sigmas[0] + 1)


def sample_euler(denoiser: Denoiser, x, sigmas, callback: Callable | None = None):
    """Euler's method on the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` (EDM Alg. 1, no churn).

    Args:
        denoiser: ``D(x, sigma) -> x0_hat`` with ``x [B, F, C, h, w]`` and ``sigma`` a float32 scalar.
        x: initial latents ``[B, F, C, h, w]`` at noise level ``sigmas[0]`` (numpy or torch).
        sigmas: ``[steps + 1]``, decreasing, last entry 0, float32.
        callback: called as ``callback(i, sigma_i, x)`` after each step.

    Returns:
        ``[B, F, C, h, w]``: the sample at ``sigmas[-1]``.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
        if callback is not None:
            callback(i, sigma, x)
    return x
