"""SVD's EDM preconditioning for a v-prediction UNet (SF-V paper Eq. 6, Karras et al. 2022 Table 1).

With sigma_data = 1 the denoised estimate is

    x0_hat = c_skip(s) * x + c_out(s) * F(c_in(s) * x; c_noise(s), cond)
    c_skip = 1 / (s^2 + 1),  c_out = -s / sqrt(s^2 + 1),  c_in = 1 / sqrt(s^2 + 1),  c_noise = 0.25 log s

``c_out`` carries the minus sign of diffusers' ``EulerDiscreteScheduler`` for ``v_prediction``
(``denoised = model_output * (-s / sqrt(s^2+1)) + sample / (s^2+1)``), which SVD's weights follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` for ``sigma [B]``, each ``[B]`` (Eq. 6, sigma_data = 1)."""
    sigma = sigma.float()
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / (sigma**2 + 1.0).sqrt()
    c_in = 1.0 / (sigma**2 + 1.0).sqrt()
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None, None]  # [B] -> [B, 1, 1, 1, 1] over [B, F, C, h, w]


def unet_inputs(x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> dict[str, torch.Tensor]:
    """The UNet's keyword inputs for noisy latents ``x [B, F, C, h, w]`` at ``sigma [B]``.

    ``sample = cat([c_in * x, image_latent per frame], dim=2)`` is ``[B, F, 2C, h, w]``;
    ``timestep = c_noise [B]``.
    """
    _, _, c_in, c_noise = edm_scalings(sigma)
    frames = x.shape[1]
    image = cond.image_latent[:, None].expand(-1, frames, -1, -1, -1).to(x.dtype)
    sample = torch.cat([_bcast(c_in).to(x.dtype) * x, image], dim=2)
    return dict(
        sample=sample,
        timestep=c_noise.to(x.dtype),
        encoder_hidden_states=cond.image_embeds.to(x.dtype),
        added_time_ids=cond.added_time_ids.to(x.dtype),
    )


def denoise(unet, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """``x0_hat [B, F, C, h, w]`` = D(x; sigma, cond) (Eq. 6) with ``unet`` any callable UNet
    (a diffusers ``UNetSpatioTemporalConditionModel``, possibly wrapped by DDP)."""
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    c_skip, c_out, _, _ = edm_scalings(sigma)
    out = unet(**unet_inputs(x, sigma, cond), return_dict=False)[0]
    return _bcast(c_skip).to(out.dtype) * x + _bcast(c_out).to(out.dtype) * out
