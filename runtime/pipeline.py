"""Image in, video out: SVD's image-to-video pipeline over the engines of any backend.

Reads top to bottom like diffusers' ``StableVideoDiffusionPipeline.__call__`` and reproduces its
output: the same preprocessing, the same random draws (noise augmentation, then the initial
latents), the same schedule, preconditioning and guidance. It never asks which backend its
engines are, and needs only numpy (plus what the engines need).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from engines.base import Engine
from engines.factory import Engines
from contract.specs import ModelConfig
from runtime.conditioning import added_time_ids, augment_image, guidance_scales
from runtime.denoiser import SVDDenoiser
from runtime.errors import InputError
from runtime.noise import NoiseSource, noise_source
from runtime.options import GenerateOptions, chosen_sampler
from runtime.preprocess import ImageInput, load_image, pixels, vae_pixels
from runtime.sampling import (SamplerConfig, initial_noise_scale, karras_sigmas, lcm_initial_noise_scale, lcm_schedule,
                              sample_euler, sample_lcm)
from runtime.video import to_uint8

OUTPUTS = ("frames", "latents")
TORCH_BACKEND_MODULES = ("torch", "diffusers", "transformers")  # what the torch backend imports (the `export` extra)
STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "sampler", "vae_decoder")


@dataclass
class VideoResult:
    """One generated clip."""

    frames: np.ndarray | None  # uint8 [F, H, W, 3]; None for output="latents"
    latents: np.ndarray  # float32 [1, F, C, h, w], the final latents before decoding
    options: GenerateOptions  # what was generated, every default filled in
    timings: dict = field(default_factory=dict)  # seconds per stage (STAGES, total), unet_calls, steps

    def images(self) -> list[PIL.Image.Image]:
        """The frames as PIL images."""
        if self.frames is None:
            raise InputError("this result holds latents only; call the pipeline with output='frames'")
        return [PIL.Image.fromarray(f) for f in self.frames]


class VideoPipeline:
    """Chains ``clip_preprocess -> image_encoder -> vae_encoder -> unet (sampler) -> vae_decoder``.

    Load once, call many times; as a context manager it activates all engines up front and
    releases them at the end::

        with VideoPipeline.from_bundle("bundle/", backend="onnxruntime") as pipe:
            clip = pipe("cat.png", GenerateOptions(steps=1, max_guidance=1.0))
            clip = pipe("cat.png", steps=25, seed=3)          # or keyword overrides
    """

    def __init__(self, engines: Engines, sampler: SamplerConfig | None = None):
        self.engines = engines
        self.config: ModelConfig = engines.config
        self.sampler = sampler or SamplerConfig()  # the bundle's sampler and its defaults (manifest "sampler")

    @classmethod
    def from_bundle(cls, bundle_dir: str | os.PathLike, backend: str = "onnxruntime", *, precision: str | None = None,
                    providers=None, threads: int | None = None, engines=None, **backend_options) -> "VideoPipeline":
        """Engines from an exported bundle; ``backend_options`` go to :func:`engines.factory.create_engines`
        (OpenVINO: ``ov_cache_dir``; ``precision="bf16"`` is OpenVINO's bf16 arithmetic).

        ``engines`` chooses per network, overriding ``backend`` / ``precision`` there:
        ``{"unet": ("onnxruntime", "int8"), "vae_decoder": ("openvino", "bf16")}``, or a measured
        recipe's (``engines.recipe.recipe_engines("auto", bundle_dir)``).

        ``backend="torch"`` runs the PyTorch modules of the model the bundle was exported from
        (the manifest's ``model.source``), in fp32, not the bundle's graphs: it is the reference
        the graphs are validated against.
        """
        from engines.factory import pipeline_engines
        from contract.bundle import Bundle

        if backend == "torch":
            require_torch_backend()
        bundle = Bundle.load(bundle_dir)
        return cls(pipeline_engines(bundle, backend, precision=precision, providers=providers, threads=threads,
                                    engines=engines, **backend_options), bundle.sampler)

    @classmethod
    def from_model(cls, model="tiny", unet: str | os.PathLike | None = None) -> "VideoPipeline":
        """PyTorch engines straight from a diffusers SVD directory, ``tiny`` or ``svd-random``."""
        from engines.factory import model_engines

        require_torch_backend()
        return cls(model_engines(model, unet=unet))

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "VideoPipeline":
        for engine in self.engines.all():
            engine.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release every engine (sessions, GPU memory); they reload on the next call."""
        for engine in self.engines.all():
            engine.deactivate()

    # ------------------------------------------------------------------ generation

    def resolve(self, options: GenerateOptions) -> GenerateOptions:
        """``options`` with the model's and the sampler's defaults filled in, checked (:class:`InputError`)."""
        return options.resolve(self.config, self.sampler)

    def __call__(self, image: ImageInput, options: GenerateOptions | None = None, *, noise: NoiseSource | None = None,
                 output: str = "frames", progress: bool = True, **overrides) -> VideoResult:
        """Generate a clip from ``image``.

        Args:
            options: what to generate (:class:`GenerateOptions`); ``None`` fields take the
                model's defaults from the manifest. Keyword ``overrides`` replace fields.
            noise: where the random numbers come from (:mod:`runtime.noise`); default the
                options' ``generator`` seeded with ``seed``.
            output: ``"frames"`` (decoded uint8 frames) or ``"latents"`` (skip the decoder).

        ``steps=1`` with ``max_guidance=1`` is SF-V's one-step setting (schedule
        ``[sigma_max, 0]``, no guidance, UNet batch 1). Guidance (batch doubled) is on when
        ``max_guidance > 1``, as in diffusers.
        """
        try:
            opts = dataclasses.replace(options or GenerateOptions(), **overrides)
        except TypeError as exc:
            raise InputError(f"unknown generation option: {exc}; see runtime.options.GenerateOptions") from None
        opts = self.resolve(opts)
        if output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "frames":
            self._decoder_engine(opts.decoder)  # a missing fast decoder fails before any work
        cfg, engines = self.config, self.engines
        noise = noise or noise_source(opts.generator, opts.seed)
        timings: dict = {}
        start = time.perf_counter()

        # 1. Preprocess: CLIP's view (a graph) and the noise-augmented VAE view of the image.
        with _timed(timings, "preprocess"):
            image = load_image(image)
            pixel_values = engines.clip_preprocess.run({"pixels": pixels(image)})["pixel_values"]
            vae_image = vae_pixels(image, opts.height, opts.width)
            vae_image = augment_image(vae_image, opts.noise_aug_strength, noise.augmentation(vae_image.shape))

        # 2. CLIP image embedding [1, D].
        with _timed(timings, "image_encoder"):
            image_embeds = engines.image_encoder.run({"pixel_values": pixel_values})["image_embeds"]

        # 3. VAE-encode the conditioning image [1, C, h, w] (the mode, not scaled).
        with _timed(timings, "vae_encoder"):
            image_latent = engines.vae_encoder.run({"image": vae_image})["latent"]

        # 4. Denoise from sigma_max with the chosen sampler (Euler, or consistency sampling).
        with _timed(timings, "denoise"):
            h, w = opts.height // cfg.vae_scale_factor, opts.width // cfg.vae_scale_factor
            eps = noise.latents((1, opts.num_frames, cfg.latent_channels, h, w))
            denoiser = SVDDenoiser(
                engines.unet,
                image_embeds,
                image_latent,
                added_time_ids(opts.fps, opts.motion_bucket_id, opts.noise_aug_strength, cfg.num_time_ids),
                opts.num_frames,
                guidance_scales(opts.min_guidance, opts.max_guidance, opts.num_frames),
            )
            with _progress(opts.steps, "denoise", "step", progress) as bar:
                if opts.sampler == "lcm":
                    p = chosen_sampler(opts.sampler, self.sampler).params
                    sigmas, timesteps = lcm_schedule(opts.steps, p)
                    latents = sample_lcm(lambda x, s, t: denoiser.output(x, s, t, p.sigma_data), eps * lcm_initial_noise_scale(p),
                                         sigmas, timesteps, noise.step, p, callback=lambda *_: bar.update())
                else:
                    sigmas = karras_sigmas(opts.steps, cfg.sigma_min, cfg.sigma_max)
                    latents = sample_euler(denoiser, eps * initial_noise_scale(sigmas), sigmas, callback=lambda *_: bar.update())
        timings["unet"] = denoiser.unet_seconds
        timings["sampler"] = timings.pop("denoise") - denoiser.unet_seconds  # glue outside the UNet

        # 5. Decode in chunks of frames.
        frames = None
        timings["vae_decoder"] = 0.0
        if output == "frames":
            with _timed(timings, "vae_decoder"):
                frames = self.decode(latents, opts.decode_chunk_size, progress, opts.decoder)

        timings.update(total=time.perf_counter() - start, unet_calls=denoiser.unet_calls, steps=opts.steps)
        return VideoResult(frames=frames, latents=latents, options=opts, timings=timings)

    def _decoder_engine(self, decoder: str) -> Engine:
        engine = self.engines.vae_decoder if decoder == "full" else self.engines.vae_decoder_fast
        if engine is None:
            raise InputError(
                "decoder='fast' needs a bundle with the distilled decoder (vae_decoder_fast), which this one lacks; "
                "export it with `python -m export.onnx --model M --fast-decoder RUN --out BUNDLE`, or use --decoder full"
            )
        return engine

    def decode(self, latents: np.ndarray, decode_chunk_size: int, progress: bool = False, decoder: str = "full") -> np.ndarray:
        """``latents [1, F, C, h, w]`` -> uint8 frames ``[F, H, W, 3]``, ``decode_chunk_size`` frames per call.

        ``decoder="fast"`` runs the bundle's distilled ``vae_decoder_fast`` (same signature).

        The temporal decoder mixes frames within a chunk only, so smaller chunks save memory
        at some cost in temporal consistency (as in diffusers).
        """
        engine = self._decoder_engine(decoder)
        z = latents.reshape(-1, *latents.shape[2:]) * np.float32(1 / self.config.scaling_factor)  # [F, C, h, w]
        chunks = []
        with _progress(-(-z.shape[0] // decode_chunk_size), "decode", "chunk", progress) as bar:
            for i in range(0, z.shape[0], decode_chunk_size):
                chunks.append(engine.run({"latent": z[i : i + decode_chunk_size]})["sample"])
                bar.update()
        return to_uint8(np.concatenate(chunks))


def require_torch_backend() -> None:
    """:class:`BackendUnavailableError` naming the fix when the torch backend's libraries are not
    installed (the runtime-only ``pip install .``); checked without importing them."""
    import importlib.util

    from contract.errors import BackendUnavailableError

    missing = [name for name in TORCH_BACKEND_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailableError(
            f"the torch backend (--backend torch, --model) needs {', '.join(missing)}, which this install lacks "
            "(`pip install .` is the runtime alone); install them with `pip install '.[export]'`, "
            "or run the bundle on ONNX Runtime (--backend onnxruntime, the default)"
        )


@contextlib.contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _progress(total: int, desc: str, unit: str, enabled: bool):
    """A tqdm bar on a terminal; nothing in logs and pipes (no carriage-return lines in files)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None if enabled else True)
