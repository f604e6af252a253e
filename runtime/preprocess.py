"""Image preprocessing exactly as diffusers' ``StableVideoDiffusionPipeline`` does it.

Two views of the conditioning image:

- the CLIP view: the image as given (any size), scaled to [-1, 1], resized to the encoder's
  224 x 224 with SVD's antialiasing (Gaussian blur + bicubic), back to [0, 1], then CLIP
  normalisation with the model's ``image_mean`` / ``image_std``;
- the VAE view: resized to ``height x width`` by diffusers' ``VideoProcessor`` (Lanczos) and
  scaled to [-1, 1].

The resizing is diffusers' own code, imported, so that the two never drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from diffusers.video_processor import VideoProcessor

from export.specs import ModelConfig
from runtime.errors import InputError

ImageInput = str | os.PathLike | PIL.Image.Image | np.ndarray


def load_image(image: ImageInput) -> PIL.Image.Image:
    """An RGB PIL image from a path, a PIL image or a uint8 array ``[H, W, 3]`` / ``[H, W]``."""
    if isinstance(image, PIL.Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise InputError(
                f"image array must be uint8 [H, W, 3] (or [H, W] / [H, W, 4]); got {image.dtype} {list(image.shape)}"
            )
        return PIL.Image.fromarray(image).convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"input image {path} does not exist (or is not a file); pass --image PATH to a PNG/JPEG/WebP")
        try:
            with PIL.Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except (PIL.UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path} is not a readable image ({exc}); pass a PNG, JPEG or WebP file") from None
    raise InputError(f"unsupported image type {type(image).__name__}; pass a path, a PIL image or a uint8 array")


def clip_pixels(image: PIL.Image.Image, config: ModelConfig) -> torch.Tensor:
    """The CLIP encoder's input ``pixel_values [1, 3, S, S]`` (S = ``config.clip_image_size``).

    As ``StableVideoDiffusionPipeline._encode_image``: normalise to [-1, 1] *before* the
    antialiased resize (to match the original implementation), back to [0, 1], then
    ``(x - mean) / std``.
    """
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    size = config.clip_image_size
    x = _resize_with_antialiasing(x * 2.0 - 1.0, (size, size))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(config.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(config.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def vae_pixels(image: PIL.Image.Image, config: ModelConfig, height: int, width: int) -> torch.Tensor:
    """The VAE encoder's input ``image [1, 3, height, width]`` in [-1, 1] (diffusers' VideoProcessor)."""
    processor = VideoProcessor(do_resize=True, vae_scale_factor=config.vae_scale_factor)
    return processor.preprocess(image, height=height, width=width).to(torch.float32)
