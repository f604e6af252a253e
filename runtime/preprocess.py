"""The conditioning image: loading, and the VAE's view of it, as diffusers' SVD pipeline computes them.

- the VAE view: resized to ``height x width`` with Pillow's Lanczos filter (diffusers'
  ``VideoProcessor``), then ``x / 255`` and ``2x - 1`` in float32;
- the CLIP view is the bundle's ``clip_preprocess`` graph (see :mod:`export.preprocess_graph`),
  run by an engine like the networks, so every runtime computes it the same way.

Every image becomes RGB8 first, by one rule that the C++ runtime (``sfv-generate``) follows too:
a 16-bit sample becomes its high byte (``value >> 8``); grey is repeated into R, G and B; alpha
is dropped (not composited). Pillow's PNG decoder and stb_image already read 16-bit colour PNGs
that way; Pillow reads 16-bit grey as mode ``I;16``, whose own conversion to RGB would clip every
value above 255, so that mode is converted here.

Needs numpy and Pillow only. Silent changes to the image are logged once per call: an alpha
channel dropped, an aspect ratio changed by the resize.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import PIL.Image

from runtime.errors import InputError

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike | PIL.Image.Image | np.ndarray
MIN_SIDE = 2  # the antialiasing blur reflects at the border: one pixel has nothing to reflect
GREY_16 = ("I;16", "I;16B", "I;16L", "I;16N")  # Pillow's 16-bit greyscale modes


def load_image(image: ImageInput) -> PIL.Image.Image:
    """An RGB PIL image from a path, a PIL image or a uint8 array ``[H, W, 3]`` / ``[H, W]`` / ``[H, W, 4]``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise InputError(
                f"image array must be uint8 [H, W, 3] (or [H, W] / [H, W, 4]); got {image.dtype} {list(image.shape)}"
            )
        image = PIL.Image.fromarray(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"input image {path} does not exist (or is not a file); pass --image PATH to a PNG/JPEG/WebP")
        try:
            with PIL.Image.open(path) as im:
                im.load()
                image = im.copy()
        except (PIL.UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path} is not a readable image ({exc}); pass a PNG, JPEG or WebP file") from None
    elif not isinstance(image, PIL.Image.Image):
        raise InputError(f"unsupported image type {type(image).__name__}; pass a path, a PIL image or a uint8 array")
    if min(image.size) < MIN_SIDE:
        raise InputError(
            f"the image is {image.width}x{image.height} pixels; each side needs at least {MIN_SIDE} pixels "
            "(CLIP's antialiased resize reflects at the borders)"
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        log.warning("the image's alpha channel is dropped (SVD conditions on RGB); flatten it yourself to choose a background")
    if image.mode in GREY_16:  # the module docstring's rule: the high byte
        image = PIL.Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))  # mode L
    return image if image.mode == "RGB" else image.convert("RGB")


def pixels(image: PIL.Image.Image) -> np.ndarray:
    """The ``clip_preprocess`` graph's input: uint8 ``[H, W, 3]``."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def vae_pixels(image: PIL.Image.Image, height: int, width: int) -> np.ndarray:
    """The VAE encoder's input ``image [1, 3, height, width]`` float32 in [-1, 1] (diffusers' VideoProcessor)."""
    if abs(image.width / image.height - width / height) > 0.01:
        log.warning("the %dx%d image is resized to %dx%d without keeping its aspect ratio (as diffusers does); "
                    "crop it first to avoid stretching", image.width, image.height, width, height)
    if image.size != (width, height):
        image = image.resize((width, height), resample=PIL.Image.LANCZOS)
    x = np.asarray(image, dtype=np.float32) / 255.0
    return np.ascontiguousarray((2.0 * x - 1.0).transpose(2, 0, 1)[None], dtype=np.float32)
