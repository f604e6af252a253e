"""SVD's micro-conditioning and the noise augmentation of the conditioning image.

SVD is conditioned on ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]``
(the model was trained on fps - 1; Stability's ``simple_video_sample.py``), and the conditioning
image is noised, ``image + noise_aug_strength * eps``, before the VAE encodes it. The encoded
latent is *not* multiplied by ``scaling_factor`` before it is concatenated with the noisy video
latents: the UNet was trained that way.
"""

from __future__ import annotations

import torch


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float, num_time_ids: int = 3) -> torch.Tensor:
    """``[1, 3]`` float32: ``[fps - 1, motion_bucket_id, noise_aug_strength]``."""
    ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=torch.float32)
    if ids.shape[1] != num_time_ids:
        raise ValueError(f"the UNet expects {num_time_ids} added time ids, SVD's conditioning gives {ids.shape[1]}")
    return ids


def augment_image(image: torch.Tensor, noise_aug_strength: float, generator: torch.Generator) -> torch.Tensor:
    """``image [B, 3, H, W]`` in [-1, 1] plus ``noise_aug_strength * eps``, eps ~ N(0, I).

    Draws from ``generator`` first (before the initial latents), as diffusers does.
    """
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return image + noise_aug_strength * noise


def guidance_scales(min_guidance: float, max_guidance: float, num_frames: int) -> torch.Tensor | None:
    """Per-frame classifier-free guidance weights ``[F]`` (linear from first to last frame).

    ``None`` when guidance is off: as in diffusers, CFG runs only if ``max_guidance > 1``
    (a scale of 1 is the conditional prediction alone, and the batch is not doubled).
    """
    if max_guidance <= 1.0:
        return None
    return torch.linspace(min_guidance, max_guidance, num_frames)
