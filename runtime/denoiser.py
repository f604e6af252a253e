"""The SVD denoiser: the UNet engine wrapped with EDM preconditioning and classifier-free guidance.

``D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma), cond)``
(Karras et al. 2022, Eq. 7; SF-V paper Eq. 6) with SVD's v-prediction scalings, sigma_data = 1:
``c_skip = 1/(s^2+1)``, ``c_out = -s/sqrt(s^2+1)``, ``c_in = 1/sqrt(s^2+1)``, ``c_noise = 0.25 ln s``.
"""

from __future__ import annotations

import time

import torch

from engines.base import Engine


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's time input for noise level ``sigma``: ``0.25 ln sigma``."""
    return 0.25 * torch.log(sigma)


def scale_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``c_in * x = x / sqrt(sigma^2 + 1)``: the UNet's noisy-latent input."""
    return x / (sigma**2 + 1) ** 0.5


def denoised_from_output(F: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x0_hat = c_out * F + c_skip * x`` with ``c_out = -sigma / sqrt(sigma^2+1)``, ``c_skip = 1 / (sigma^2+1)``.

    Written with divisions in diffusers' order: at sigma = 700 the Euler step subtracts numbers
    of size 700, so a different rounding here would show at 1e-4 in one-step outputs.
    """
    return F * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)


class SVDDenoiser:
    """``denoised = denoiser(x, sigma)`` over a UNet engine, for one conditioning image.

    The conditioning is batched once here. With guidance, the batch is doubled as
    ``[unconditional, conditional]`` with zero image embedding and zero image latent for the
    unconditional half (SVD's convention), and the raw outputs are combined per frame,
    ``F = F_u + w_f * (F_c - F_u)``, before the preconditioning.

    Args:
        unet: engine with the UNet spec (``sample [B, F, 8, h, w]``, ``timestep [B]``,
            ``encoder_hidden_states [B, 1, D]``, ``added_time_ids [B, 3]`` -> ``noise_pred``).
        image_embeds: CLIP embedding ``[1, D]``.
        image_latent: VAE latent of the noise-augmented image ``[1, C, h, w]`` (unscaled).
        time_ids: ``[1, 3]`` added time ids.
        num_frames: F.
        guidance: per-frame weights ``[F]``, or ``None`` for no guidance (batch 1).
    """

    def __init__(
        self,
        unet: Engine,
        image_embeds: torch.Tensor,
        image_latent: torch.Tensor,
        time_ids: torch.Tensor,
        num_frames: int,
        guidance: torch.Tensor | None = None,
    ):
        self.unet = unet
        embeds = image_embeds.unsqueeze(1)  # [1, 1, D]
        latent = image_latent.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)  # [1, F, C, h, w]
        if guidance is not None:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
            latent = torch.cat([torch.zeros_like(latent), latent])
            time_ids = torch.cat([time_ids, time_ids])
            guidance = guidance.view(1, -1, 1, 1, 1)  # one weight per frame
        self.encoder_hidden_states = embeds
        self.image_latents = latent
        self.added_time_ids = time_ids
        self.guidance = guidance
        self.batch = embeds.shape[0]
        self.unet_seconds = 0.0
        self.unet_calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x [1, F, C, h, w]`` at noise level ``sigma`` (0-d) -> ``x0_hat [1, F, C, h, w]``."""
        x_in = scale_input(torch.cat([x] * self.batch), sigma)
        start = time.perf_counter()
        F = self.unet.run(
            {
                "sample": torch.cat([x_in, self.image_latents], dim=2),
                "timestep": c_noise(sigma).expand(self.batch).contiguous(),
                "encoder_hidden_states": self.encoder_hidden_states,
                "added_time_ids": self.added_time_ids,
            }
        )["noise_pred"]
        self.unet_seconds += time.perf_counter() - start
        self.unet_calls += 1
        if self.guidance is not None:
            F_uncond, F_cond = F.chunk(2)
            F = F_uncond + self.guidance * (F_cond - F_uncond)
        return denoised_from_output(F, x, sigma)
