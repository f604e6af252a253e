"""The SVD denoiser: the UNet engine wrapped with EDM preconditioning and classifier-free guidance.

``D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma), cond)``
(Karras et al. 2022, Eq. 7; SF-V paper Eq. 6) with SVD's v-prediction scalings, sigma_data = 1:
``c_skip = 1/(s^2+1)``, ``c_out = -s/sqrt(s^2+1)``, ``c_in = 1/sqrt(s^2+1)``, ``c_noise = 0.25 ln s``.

The scalings are operator arithmetic on float32 values, shared by the runtime (numpy) and
training (torch tensors); the C++ runtime repeats the same operations in the same order.
"""

from __future__ import annotations

import time

import numpy as np

from engines.base import Engine
from runtime.sampling import sqrt


def c_noise(sigma):
    """The UNet's time input for noise level ``sigma``: ``0.25 ln sigma``, in float64, rounded to float32.

    float64 then one rounding makes the value portable (any libm gives the same float32);
    float32 logarithms differ between libraries in the last bit.
    """
    if hasattr(sigma, "double"):  # torch
        return (0.25 * sigma.double().log()).float()
    return (0.25 * np.log(np.asarray(sigma, dtype=np.float64))).astype(np.float32)


def scale_input(x, sigma, sigma_data=1):
    """``c_in * x = x / sqrt(sigma^2 + sigma_data^2)``: the UNet's noisy-latent input (SVD: sigma_data = 1)."""
    return x / sqrt(sigma * sigma + sigma_data * sigma_data)


def denoised_from_output(F, x, sigma):
    """``x0_hat = c_out * F + c_skip * x`` with ``c_out = -sigma / sqrt(sigma^2+1)``, ``c_skip = 1 / (sigma^2+1)``.

    Written with divisions in diffusers' order: at sigma = 700 the Euler step subtracts numbers
    of size 700, so a different rounding here would show at 1e-4 in one-step outputs.
    """
    return F * (-sigma / sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1)


def guide(F_uncond, F_cond, weights):
    """Classifier-free guidance per frame: ``F_u + w_f * (F_c - F_u)``; ``weights [1, F, 1, 1, 1]``."""
    return F_uncond + weights * (F_cond - F_uncond)


class SVDDenoiser:
    """``denoised = denoiser(x, sigma)`` over a UNet engine, for ``B`` conditioning images (one per clip).

    The conditioning is batched once here. With guidance, the batch is doubled as
    ``[unconditional x B, conditional x B]`` (diffusers' ``torch.cat([negative, positive])``) with
    zero image embeddings and zero image latents for the unconditional half (SVD's convention),
    and the raw outputs are combined per frame with :func:`guide` before the preconditioning.
    Every clip's values go through the same element-wise operations as a clip alone (B = 1).

    One denoiser serves one pipeline call: its counters (``unet_seconds``, ``unet_calls``) are
    that call's, so concurrent calls never share them.

    Args:
        unet: engine with the UNet spec (``sample [B, F, 8, h, w]``, ``timestep [B]``,
            ``encoder_hidden_states [B, 1, D]``, ``added_time_ids [B, 3]`` -> ``noise_pred``).
        image_embeds: CLIP embeddings ``[B, D]`` float32.
        image_latent: VAE latents of the noise-augmented images ``[B, C, h, w]`` (unscaled).
        time_ids: ``[B, 3]`` (or ``[1, 3]``, the same for every clip) added time ids.
        num_frames: F.
        guidance: per-frame weights ``[F]``, or ``None`` for no guidance (UNet batch B).
    """

    def __init__(self, unet: Engine, image_embeds: np.ndarray, image_latent: np.ndarray, time_ids: np.ndarray,
                 num_frames: int, guidance: np.ndarray | None = None):
        self.unet = unet
        self.videos = image_embeds.shape[0]  # B
        embeds = image_embeds[:, None]  # [B, 1, D]
        latent = np.repeat(image_latent[:, None], num_frames, axis=1)  # [B, F, C, h, w]
        time_ids = np.repeat(time_ids, self.videos, axis=0) if time_ids.shape[0] == 1 else time_ids  # [B, 3]
        self.copies = 1  # how often x is repeated in the UNet's batch: 2 with guidance
        if guidance is not None:
            embeds = np.concatenate([np.zeros_like(embeds), embeds])
            latent = np.concatenate([np.zeros_like(latent), latent])
            time_ids = np.concatenate([time_ids, time_ids])
            guidance = guidance.reshape(1, -1, 1, 1, 1).astype(np.float32)  # one weight per frame
            self.copies = 2
        self.encoder_hidden_states = embeds
        self.image_latents = latent
        self.added_time_ids = time_ids
        self.guidance = guidance
        self.batch = embeds.shape[0]  # the UNet's batch: B, or 2B with guidance
        self.unet_seconds = 0.0
        self.unet_calls = 0

    def __call__(self, x: np.ndarray, sigma: np.float32) -> np.ndarray:
        """``x [B, F, C, h, w]`` at noise level ``sigma`` (float32) -> ``x0_hat [B, F, C, h, w]``."""
        return denoised_from_output(self.output(x, sigma, c_noise(sigma)), x, sigma)

    def output(self, x: np.ndarray, sigma: np.float32, timestep: np.float32, sigma_data=1) -> np.ndarray:
        """The guided raw UNet output ``F [B, F, C, h, w]`` for ``x`` at ``sigma``: the UNet sees
        ``c_in x`` (:func:`scale_input`) and the time input ``timestep``; samplers that precondition
        in their own way (the consistency sampler) start from here."""
        x_in = scale_input(np.concatenate([x] * self.copies), sigma, sigma_data)
        start = time.perf_counter()
        F = self.unet.run(
            {
                "sample": np.concatenate([x_in, self.image_latents], axis=2),
                "timestep": np.full(self.batch, timestep, dtype=np.float32),
                "encoder_hidden_states": self.encoder_hidden_states,
                "added_time_ids": self.added_time_ids,
            }
        )["noise_pred"]
        self.unet_seconds += time.perf_counter() - start
        self.unet_calls += 1
        if self.guidance is not None:
            F_uncond, F_cond = F[: self.videos], F[self.videos :]
            F = guide(F_uncond, F_cond, self.guidance)
        return F
