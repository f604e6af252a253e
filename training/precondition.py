"""SVD's EDM preconditioning for a v-prediction UNet (SF-V paper Eq. 6, Karras et al. 2022 Table 1).

With sigma_data = 1 the denoised estimate is

    x0_hat = c_skip(s) * x + c_out(s) * F(c_in(s) * x; c_noise(s), cond)
    c_skip = 1 / (s^2 + 1),  c_out = -s / sqrt(s^2 + 1),  c_in = 1 / sqrt(s^2 + 1),  c_noise = 0.25 log s

``c_out`` carries the minus sign of diffusers' ``EulerDiscreteScheduler`` for ``v_prediction``
(``denoised = model_output * (-s / sqrt(s^2+1)) + sample / (s^2+1)``), which SVD's weights follow.

The arithmetic is the runtime's (:mod:`runtime.denoiser`: ``scale_input``, ``c_noise``,
``denoised_from_output``), imported, so training computes what deployment runs, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.denoiser import c_noise, denoised_from_output, scale_input


@dataclass
class Conditioning:
    """SVD's conditioning of one batch of videos.

    image_embeds: ``[B, 1, D]`` CLIP image embedding (encoder_hidden_states).
    image_latent: ``[B, C, h, w]`` VAE mode of the noise-augmented first frame, NOT scaled.
    added_time_ids: ``[B, 3]`` = ``[fps - 1, motion_bucket_id, noise_aug_strength]``.
    """

    image_embeds: torch.Tensor
    image_latent: torch.Tensor
    added_time_ids: torch.Tensor

    def to(self, device=None, dtype=None) -> "Conditioning":
        return Conditioning(*(t.to(device=device, dtype=dtype) for t in (self.image_embeds, self.image_latent, self.added_time_ids)))


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None, None]  # [B] -> [B, 1, 1, 1, 1] over [B, F, C, h, w]


def unet_inputs(x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> dict[str, torch.Tensor]:
    """The UNet's keyword inputs for noisy latents ``x [B, F, C, h, w]`` at ``sigma [B]``.

    ``sample = cat([c_in * x, image_latent per frame], dim=2)`` is ``[B, F, 2C, h, w]``;
    ``timestep = c_noise [B]``. The scalings are the runtime's functions, evaluated in float32
    (``sigma^2`` overflows fp16 at sigma 700) and cast to ``x``'s dtype afterwards.
    """
    sigma = sigma.float()
    frames = x.shape[1]
    image = cond.image_latent[:, None].expand(-1, frames, -1, -1, -1).to(x.dtype)
    sample = torch.cat([scale_input(x.float(), _bcast(sigma)).to(x.dtype), image], dim=2)
    return dict(
        sample=sample,
        timestep=c_noise(sigma).to(x.dtype),
        encoder_hidden_states=cond.image_embeds.to(x.dtype),
        added_time_ids=cond.added_time_ids.to(x.dtype),
    )


def denoise(unet, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """``x0_hat [B, F, C, h, w]`` = D(x; sigma, cond) (Eq. 6) with ``unet`` any callable UNet
    (a diffusers ``UNetSpatioTemporalConditionModel``, possibly wrapped by DDP); ``sigma`` is
    ``[B]`` or 0-d (one level for the batch, as the runtime's sampler passes it)."""
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    out = unet(**unet_inputs(x, sigma, cond), return_dict=False)[0]
    return denoised_from_output(out.float(), x.float(), _bcast(sigma.float())).to(out.dtype)
