"""SVD's micro-conditioning and the noise augmentation of the conditioning image.

SVD is conditioned on ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]``
(the model was trained on fps - 1; Stability's ``simple_video_sample.py``), and the conditioning
image is noised, ``image + noise_aug_strength * eps``, before the VAE encodes it. The encoded
latent is *not* multiplied by ``scaling_factor`` before it is concatenated with the noisy video
latents: the UNet was trained that way.
"""

from __future__ import annotations

import numpy as np


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float, num_time_ids: int = 3) -> np.ndarray:
    """``[1, 3]`` float32: ``[fps - 1, motion_bucket_id, noise_aug_strength]``."""
    ids = np.array([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=np.float32)
    if ids.shape[1] != num_time_ids:
        raise ValueError(f"the UNet expects {num_time_ids} added time ids, SVD's conditioning gives {ids.shape[1]}")
    return ids


def augment_image(image: np.ndarray, noise_aug_strength: float, noise: np.ndarray) -> np.ndarray:
    """``image [B, 3, H, W]`` in [-1, 1] plus ``noise_aug_strength * noise`` (float32, noise ~ N(0, I)).

    The result is laid out channels-last (``[B, H, W, 3]`` in memory), as diffusers' tensor is
    (``VideoProcessor.numpy_to_pt`` transposes an NHWC array): PyTorch picks its convolution
    kernels by layout, so the torch backend's VAE then rounds exactly as diffusers' does.
    """
    out = np.empty(np.moveaxis(image, 1, -1).shape, np.float32).transpose(0, 3, 1, 2)
    return np.add(image, np.float32(noise_aug_strength) * noise, out=out)


def guidance_scales(min_guidance: float, max_guidance: float, num_frames: int) -> np.ndarray | None:
    """Per-frame classifier-free guidance weights ``[F]`` float32 (linear from first to last frame).

    ``None`` when guidance is off: as in diffusers, CFG runs only if ``max_guidance > 1``
    (a scale of 1 is the conditional prediction alone, and the batch is not doubled).
    Computed in float64 (numpy's ``linspace``) and rounded once.
    """
    if max_guidance <= 1.0:
        return None
    return np.linspace(min_guidance, max_guidance, num_frames).astype(np.float32)
