"""Noise schedules and samplers as pure functions (after k-diffusion's ``sampling.py``).

A sampler takes a denoiser ``D(x, sigma) -> x0_hat``, the initial ``x`` and a decreasing
``sigmas`` schedule ending in 0, and returns the final sample. The SF-V one-step mode is no
special path: it is the schedule ``[sigma_max, 0]``, one Euler step, which returns ``D(x, sigma_max)``.

Two samplers: ``euler`` (:func:`sample_euler`, SVD's) and ``lcm`` (:func:`sample_lcm`, multistep
consistency sampling as AnimateLCM-SVD-xt's scheduler runs it: its own schedule, time inputs and
rounding of the preconditioning, and fresh noise between steps). Which one a bundle uses, with its
defaults, is the manifest's ``sampler`` (:class:`contract.bundle.SamplerConfig`).

The arithmetic is plain operators on float32 values, so the same functions run on numpy arrays
(the runtime) and on torch tensors (training's evaluation): training evaluates with exactly the
arithmetic that is deployed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from contract.bundle import SAMPLERS, LCMParams, SamplerConfig  # noqa: F401  (the manifest's sampler contract)

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
        callback: called as ``callback(i, sigma_i, x, denoised)`` after each step, with the new
            ``x`` and the step's ``D(x, sigma_i)`` (k-diffusion's ``x, i, sigma, denoised``).

    Returns:
        ``[B, F, C, h, w]``: the sample at ``sigmas[-1]``.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
    return x


# --------------------------------------------------------------------------- consistency sampling (lcm)

def lcm_schedule(steps: int, p: LCMParams = LCMParams()) -> tuple[np.ndarray, np.ndarray]:
    """The consistency sampler's levels: ``sigmas [steps + 1]`` float32 (last 0) and ``timesteps [steps]`` float32.

    The UNet was distilled on ``N = num_train_timesteps`` Karras levels
    ``sigma(r) = (sigma_max^(1/rho) + r (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` at
    ``r = j / (N - 1)``; ``steps`` of them are visited at ``j = k * (N // steps)``, ``k = 0..steps-1``
    (the schedule of ``AnimateLCMSVDStochasticIterativeScheduler.set_timesteps``; note that the
    last level is not sigma_min: 4 of 40 levels end at j = 30). Computed in float64; the sigmas are
    rounded to float32 once, and the UNet's timesteps ``0.25 ln sigma`` are taken from the float64
    sigmas (as that scheduler hands its float64 timesteps to the UNet, which rounds them to float32).
    """
    if not 1 <= steps <= p.num_train_timesteps:
        raise ValueError(f"the lcm sampler takes 1 to {p.num_train_timesteps} steps (its num_train_timesteps), got {steps}")
    ratio = p.num_train_timesteps // steps
    ramp = np.arange(steps, dtype=np.int64) * ratio / (p.num_train_timesteps - 1)
    min_inv_rho, max_inv_rho = p.sigma_min ** (1 / p.rho), p.sigma_max ** (1 / p.rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** p.rho
    timesteps = (0.25 * np.log(sigmas)).astype(np.float32)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), timesteps


def lcm_initial_noise_scale(p: LCMParams = LCMParams()) -> np.float32:
    """``sqrt(sigma_max^2 + 1)`` in float64, rounded to float32 (the scheduler's ``init_noise_sigma``)."""
    return np.float32(np.sqrt(np.float64(p.sigma_max) ** 2 + 1.0))


def consistency_scalings(sigma, sigma_data: float = 1.0):
    """The boundary-condition scalings ``(c_skip, c_out)`` of ``x0_hat = c_skip * x + c_out * F``.

    Consistency models (Song et al. 2023, Eq. 7 and Appendix C) with EDM's preconditioning as
    AnimateLCM uses it (epsilon = 0, and a negative ``c_out`` for SVD's v-prediction):
    ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``,
    ``c_out = -sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``. Same function as the Euler
    denoiser's, but rounded as the scheduler computes it: two float32 scalars, then products.
    """
    sd2 = np.float32(sigma_data * sigma_data)
    den = sigma * sigma + sd2
    return np.float32(1.0) / den * sd2, (-sigma * np.float32(sigma_data)) / sqrt(den)


def sample_lcm(model: Callable, x, sigmas, timesteps, noise: Callable, params: LCMParams = LCMParams(),
               callback: Callable | None = None):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1; AnimateLCM, Wang et al. 2024).

    For ``i = 0..n-1``: ``x0_hat = c_skip(sigma_i) x + c_out(sigma_i) F(c_in(sigma_i) x; t_i)``
    (:func:`consistency_scalings`, optionally clamped to [-1, 1]); then re-noise to the next level,
    ``x = x0_hat + sigma_{i+1} * s_noise * z_i`` with ``z_i ~ N(0, I)`` (AnimateLCM's variant: the
    noise scale is ``sigma_{i+1}``, not diffusers' ``sqrt(sigma_{i+1}^2 - sigma_min^2)``). The last
    step returns ``x0_hat`` (``sigma_n = 0``), so ``n`` steps draw ``n - 1`` noise arrays.

    Args:
        model: ``F(x, sigma, timestep) -> [B, F, C, h, w]``: the guided raw UNet output for latents
            ``x`` at level ``sigma`` (float32), fed ``c_in x`` and the UNet time input ``timestep``.
        x: initial latents ``[B, F, C, h, w]`` at ``sigmas[0]`` (``eps * lcm_initial_noise_scale``).
        sigmas, timesteps: :func:`lcm_schedule`.
        noise: ``noise(i, shape) -> z_i`` standard normal float32, the draw after step ``i``.
        params: ``sigma_data``, ``s_noise``, ``clip_denoised``.
        callback: called as ``callback(i, sigma_i, x, denoised)`` after each step, with the new
            ``x`` and the step's ``x0_hat``.

    Returns:
        ``[B, F, C, h, w]``: the last step's ``x0_hat``.
    """
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        c_skip, c_out = consistency_scalings(sigma, params.sigma_data)
        denoised = c_out * model(x, sigma, timesteps[i]) + c_skip * x
        if params.clip_denoised:
            denoised = denoised.clip(-1, 1)
        if i < n - 1:
            z = noise(i, denoised.shape) * np.float32(params.s_noise)
            x = denoised + z * sigma_next
        else:
            x = denoised
        if callback is not None:
            callback(i, sigma, x, denoised)
    return x
