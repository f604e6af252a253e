"""Image in, video out: SVD's image-to-video pipeline over four engines of any backend.

Reads top to bottom like diffusers' ``StableVideoDiffusionPipeline.__call__`` and reproduces its
output: the same preprocessing, the same random draws from one seeded host generator (noise
augmentation, then the initial latents), the same schedule, preconditioning and guidance. It
never asks which backend its engines are.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from engines.base import Engine
from export.specs import NETWORKS, ModelConfig, check_resolution
from runtime.conditioning import added_time_ids, augment_image, guidance_scales
from runtime.denoiser import SVDDenoiser
from runtime.errors import InputError
from runtime.preprocess import ImageInput, clip_pixels, load_image, vae_pixels
from runtime.sampling import initial_noise_scale, karras_sigmas, sample_euler
from runtime.video import to_uint8

OUTPUTS = ("frames", "latents")


@dataclass
class VideoResult:
    """One generated clip."""

    frames: np.ndarray | None  # uint8 [F, H, W, 3]; None for output="latents"
    latents: torch.Tensor  # float32 [1, F, C, h, w], the final latents before decoding
    timings: dict = field(default_factory=dict)  # seconds per stage, plus "unet_calls" and "steps"

    def images(self) -> list[PIL.Image.Image]:
        """The frames as PIL images."""
        if self.frames is None:
            raise InputError("this result holds latents only; call the pipeline with output='frames'")
        return [PIL.Image.fromarray(f) for f in self.frames]


class VideoPipeline:
    """Chains ``image_encoder -> vae_encoder -> unet (sampler) -> vae_decoder``.

    Load once, call many times; as a context manager it activates all engines up front and
    releases them at the end::

        with VideoPipeline.from_bundle("bundle/", backend="onnxruntime") as pipe:
            clip = pipe("cat.png", num_frames=14, steps=25, seed=0)
    """

    def __init__(self, engines: Mapping[str, Engine], config: ModelConfig):
        missing = [n for n in NETWORKS if n not in engines]
        if missing:
            raise InputError(f"the pipeline needs engines for {', '.join(NETWORKS)}; missing {', '.join(missing)}")
        self.engines = dict(engines)
        self.config = config

    @classmethod
    def from_bundle(
        cls, bundle_dir: str | os.PathLike, backend: str = "onnxruntime", providers=None, threads: int | None = None
    ) -> "VideoPipeline":
        """Engines from an exported bundle; the torch backend loads the model the manifest names."""
        from engines.factory import create_engines
        from export.bundle import Bundle

        bundle = Bundle.load(bundle_dir)
        return cls(create_engines(bundle, backend, providers=providers, threads=threads), bundle.config)

    @classmethod
    def from_model(cls, model="tiny", unet: str | os.PathLike | None = None) -> "VideoPipeline":
        """PyTorch engines straight from a diffusers SVD directory, ``tiny`` or ``svd-random``."""
        from engines.factory import torch_engines

        engines, config = torch_engines(model, unet=unet)
        return cls(engines, config)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "VideoPipeline":
        for engine in self.engines.values():
            engine.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release every engine (sessions, GPU memory); they reload on the next call."""
        for engine in self.engines.values():
            engine.deactivate()

    # ------------------------------------------------------------------ generation

    def __call__(
        self,
        image: ImageInput,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int = 25,
        min_guidance: float = 1.0,
        max_guidance: float = 3.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = None,
        seed: int = 0,
        output: str = "frames",
        progress: bool = True,
    ) -> VideoResult:
        """Generate a clip from ``image``.

        ``steps=1`` with ``min_guidance = max_guidance = 1.0`` is SF-V's one-step setting
        (schedule ``[sigma_max, 0]``, no guidance, UNet batch 1). Guidance (batch doubled) is
        on when ``max_guidance > 1``, as in diffusers.
        """
        cfg = self.config
        num_frames = cfg.num_frames if num_frames is None else num_frames
        height = cfg.default_height if height is None else height
        width = cfg.default_width if width is None else width
        decode_chunk_size = num_frames if decode_chunk_size is None else decode_chunk_size
        _check_options(cfg, num_frames, height, width, steps, min_guidance, max_guidance, decode_chunk_size, output)
        timings: dict = {}
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)

        # 1. Preprocess: the CLIP view and the noise-augmented VAE view of the image.
        with _timed(timings, "preprocess"):
            pil = load_image(image)
            pixel_values = clip_pixels(pil, cfg)
            vae_image = augment_image(vae_pixels(pil, cfg, height, width), noise_aug_strength, generator)

        # 2. CLIP image embedding [1, D].
        with _timed(timings, "image_encoder"):
            image_embeds = self.engines["image_encoder"].run({"pixel_values": pixel_values})["image_embeds"]

        # 3. VAE-encode the conditioning image [1, C, h, w] (the mode, not scaled).
        with _timed(timings, "vae_encoder"):
            image_latent = self.engines["vae_encoder"].run({"image": vae_image})["latent"]

        # 4. Denoise from sigma_max with the Euler sampler.
        sigmas = karras_sigmas(steps, cfg.sigma_min, cfg.sigma_max)
        shape = (1, num_frames, cfg.latent_channels, height // cfg.vae_scale_factor, width // cfg.vae_scale_factor)
        latents = torch.randn(shape, generator=generator) * initial_noise_scale(sigmas)
        denoiser = SVDDenoiser(
            self.engines["unet"],
            image_embeds,
            image_latent,
            added_time_ids(fps, motion_bucket_id, noise_aug_strength, cfg.num_time_ids),
            num_frames,
            guidance_scales(min_guidance, max_guidance, num_frames),
        )
        with tqdm(total=steps, desc="denoise", unit="step", disable=not progress, leave=False) as bar:
            latents = sample_euler(denoiser, latents, sigmas, callback=lambda *_: bar.update())
        timings["unet"] = denoiser.unet_seconds

        # 5. Decode in chunks of frames.
        frames = None
        timings["vae_decoder"] = 0.0
        if output == "frames":
            with _timed(timings, "vae_decoder"):
                frames = self.decode(latents, decode_chunk_size, progress)

        timings.update(total=time.perf_counter() - start, unet_calls=denoiser.unet_calls, steps=steps)
        return VideoResult(frames=frames, latents=latents, timings=timings)

    def decode(self, latents: torch.Tensor, decode_chunk_size: int, progress: bool = False) -> np.ndarray:
        """``latents [1, F, C, h, w]`` -> uint8 frames ``[F, H, W, 3]``, ``decode_chunk_size`` frames per call.

        The temporal decoder mixes frames within a chunk only, so smaller chunks save memory
        at some cost in temporal consistency (as in diffusers).
        """
        z = 1 / self.config.scaling_factor * latents.flatten(0, 1)  # [F, C, h, w]
        starts = range(0, z.shape[0], decode_chunk_size)
        chunks = [
            self.engines["vae_decoder"].run({"latent": z[i : i + decode_chunk_size]})["sample"]
            for i in tqdm(starts, desc="decode", unit="chunk", disable=not progress, leave=False)
        ]
        return to_uint8(torch.cat(chunks))


@contextlib.contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _check_options(cfg, num_frames, height, width, steps, min_guidance, max_guidance, decode_chunk_size, output):
    check_resolution(cfg, height, width)
    for name, value in (("num_frames", num_frames), ("steps", steps), ("decode_chunk_size", decode_chunk_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if min_guidance > max_guidance:
        raise InputError(
            f"min_guidance {min_guidance} is above max_guidance {max_guidance}: the guidance weight rises "
            "linearly from the first frame (min) to the last (max); swap them"
        )
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
