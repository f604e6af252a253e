"""Image in, video out: SVD's image-to-video pipeline over the engines of any backend.

Reads top to bottom like diffusers' ``StableVideoDiffusionPipeline.__call__`` and reproduces its
output: the same preprocessing, the same random draws (noise augmentation, then the initial
latents), the same schedule, preconditioning and guidance. It never asks which backend its
engines are, and needs only numpy (plus what the engines need).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from contract.bundle import Bundle
from contract.errors import BackendUnavailableError
from contract.specs import STAGES, ModelConfig  # noqa: F401 (STAGES: the stages of VideoResult.timings)
from engines.base import Engine
from engines.factory import Engines, model_engines, pipeline_engines
from runtime.conditioning import added_time_ids, augment_image, guidance_scales
from runtime.denoiser import SVDDenoiser
from runtime.errors import InputError
from runtime.noise import NoiseSource, noise_source
from runtime.options import GenerateOptions, chosen_sampler
from runtime.preprocess import ImageInput, load_image, pixels, vae_pixels
from runtime.progress import ProgressCallback, ProgressEvent, report
from runtime.sampling import (
    SamplerConfig,
    initial_noise_scale,
    karras_sigmas,
    lcm_initial_noise_scale,
    lcm_schedule,
    sample_euler,
    sample_lcm,
)
from runtime.video import to_uint8

OUTPUTS = ("frames", "latents")
TORCH_BACKEND_MODULES = ("torch", "diffusers", "transformers")  # what the torch backend imports (the `export` extra)


@dataclass
class VideoResult:
    """One generated clip."""

    frames: np.ndarray | None  # uint8 [F, H, W, 3]; None for output="latents"
    latents: np.ndarray  # float32 [1, F, C, h, w], the final latents before decoding
    options: GenerateOptions  # what was generated, every default filled in (seed: this clip's)
    # Seconds per stage (STAGES, total), unet_calls, steps, batch: of the whole call, which made
    # `batch` clips in one pass (the same dict values for each of them).
    timings: dict = field(default_factory=dict)

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
        if backend == "torch":
            require_torch_backend()
        bundle = Bundle.load(bundle_dir)
        return cls(pipeline_engines(bundle, backend, precision=precision, providers=providers, threads=threads,
                                    engines=engines, **backend_options), bundle.sampler)

    @classmethod
    def from_model(cls, model="tiny", unet: str | os.PathLike | None = None) -> "VideoPipeline":
        """PyTorch engines straight from a diffusers SVD directory, ``tiny`` or ``svd-random``."""
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

    def __call__(self, image: ImageInput | Sequence[ImageInput], options: GenerateOptions | None = None, *,
                 noise: NoiseSource | Sequence[NoiseSource] | None = None, seeds: Sequence[int] | None = None,
                 output: str = "frames", progress: bool = True, callback: ProgressCallback | None = None,
                 **overrides) -> VideoResult | list[VideoResult]:
        """Generate a clip from ``image``, or one clip per image of a list in one pass.

        Args:
            image: a path, PIL image or uint8 array -> one :class:`VideoResult`; a list or tuple
                of them -> ``list[VideoResult]`` in the same order, all made with one options
                object (one shape) in one pass: CLIP and the VAE encoder at batch B, the UNet at
                batch B (2B with guidance), the decoder clip by clip.
            options: what to generate (:class:`GenerateOptions`); ``None`` fields take the
                model's defaults from the manifest. Keyword ``overrides`` replace fields.
            noise: where the random numbers come from (:mod:`runtime.noise`): one source for one
                image, a list of sources (one per image) for a list; default the options'
                ``generator`` seeded with each clip's seed.
            seeds: each clip's seed for a list of images (default ``options.seed + i``); the
                result's ``options.seed`` is its clip's. Not with ``noise``.
            output: ``"frames"`` (decoded uint8 frames) or ``"latents"`` (skip the decoder).
            progress: tqdm bars on a terminal.
            callback: called with a :class:`runtime.progress.ProgressEvent` per stage and per
                UNet step; returning ``True`` raises :class:`runtime.errors.Cancelled`.

        ``steps=1`` with ``max_guidance=1`` is SF-V's one-step setting (schedule
        ``[sigma_max, 0]``, no guidance, UNet batch B). Guidance (batch doubled) is on when
        ``max_guidance > 1``, as in diffusers. A clip made in a batch goes through the same
        arithmetic as the clip made alone with the same noise (docs/runtime.md says how close
        each backend's kernels keep them). One pipeline may be called from several threads at once.
        """
        batched = isinstance(image, (list, tuple))
        images = list(image) if batched else [image]
        if not images:
            raise InputError("the list of images is empty; pass at least one image")
        try:
            opts = dataclasses.replace(options or GenerateOptions(), **overrides)
        except TypeError as exc:
            raise InputError(f"unknown generation option: {exc}; see runtime.options.GenerateOptions") from None
        opts = self.resolve(opts)
        if output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "frames":
            self._decoder_engine(opts.decoder)  # a missing fast decoder fails before any work
        clips = _clip_randomness(opts, len(images), batched, noise, seeds)
        results = self._generate(images, clips, opts, output, progress, callback)
        return results if batched else results[0]

    def _generate(self, images: list, clips: list[tuple[GenerateOptions, NoiseSource]], opts: GenerateOptions,
                  output: str, progress: bool, callback: ProgressCallback | None) -> list[VideoResult]:
        """One pass for B clips; every array's first axis is the clip (all state is this call's)."""
        cfg, engines = self.config, self.engines
        noises = [n for _, n in clips]
        B = len(images)
        timings: dict = {}
        start = time.perf_counter()

        # 1. Preprocess: CLIP's view (a graph of one image of any size) and the noise-augmented VAE view.
        with _timed(timings, "preprocess"):
            pixel_values, vae_images = [], []
            for i, img in enumerate(images):
                img = load_image(img)
                pixel_values.append(engines.clip_preprocess.run({"pixels": pixels(img)})["pixel_values"])
                vae_images.append(vae_pixels(img, opts.height, opts.width))
                report(callback, ProgressEvent("preprocess", i + 1, B))
            vae_image = np.concatenate(vae_images)  # [B, 3, H, W]
            augmentation = np.concatenate([n.augmentation(vae_images[0].shape) for n in noises])
            vae_image = augment_image(vae_image, opts.noise_aug_strength, augmentation)

        # 2. CLIP image embeddings [B, D].
        with _timed(timings, "image_encoder"):
            image_embeds = engines.image_encoder.run({"pixel_values": np.concatenate(pixel_values)})["image_embeds"]
        report(callback, ProgressEvent("image_encoder", 1, 1))

        # 3. VAE-encode the conditioning images [B, C, h, w] (the mode, not scaled).
        with _timed(timings, "vae_encoder"):
            image_latent = engines.vae_encoder.run({"image": vae_image})["latent"]
        report(callback, ProgressEvent("vae_encoder", 1, 1))

        # 4. Denoise from sigma_max with the chosen sampler (Euler, or consistency sampling).
        with _timed(timings, "denoise"):
            h, w = opts.height // cfg.vae_scale_factor, opts.width // cfg.vae_scale_factor
            clip_shape = (1, opts.num_frames, cfg.latent_channels, h, w)
            eps = np.concatenate([n.latents(clip_shape) for n in noises])  # [B, F, C, h, w]
            denoiser = SVDDenoiser(
                engines.unet,
                image_embeds,
                image_latent,
                added_time_ids(opts.fps, opts.motion_bucket_id, opts.noise_aug_strength, cfg.num_time_ids),
                opts.num_frames,
                guidance_scales(opts.min_guidance, opts.max_guidance, opts.num_frames),
            )
            with _progress(opts.steps, "denoise", "step", progress) as bar:
                def on_step(i, sigma, x, denoised):
                    bar.update()
                    report(callback, ProgressEvent("unet", i + 1, opts.steps, float(sigma), x, denoised))

                if opts.sampler == "lcm":
                    p = chosen_sampler(opts.sampler, self.sampler).params
                    sigmas, timesteps = lcm_schedule(opts.steps, p)
                    step_noise = lambda i, shape: np.concatenate([n.step(i, clip_shape) for n in noises])  # noqa: E731
                    latents = sample_lcm(lambda x, s, t: denoiser.output(x, s, t, p.sigma_data), eps * lcm_initial_noise_scale(p),
                                         sigmas, timesteps, step_noise, p, callback=on_step)
                else:
                    sigmas = karras_sigmas(opts.steps, cfg.sigma_min, cfg.sigma_max)
                    latents = sample_euler(denoiser, eps * initial_noise_scale(sigmas), sigmas, callback=on_step)
        timings["unet"] = denoiser.unet_seconds
        timings["sampler"] = timings.pop("denoise") - denoiser.unet_seconds  # the sampler's own arithmetic outside the UNet

        # 5. Decode each clip in chunks of frames (the decoder's batch is one clip's frames).
        frames = [None] * B
        timings["vae_decoder"] = 0.0
        if output == "frames":
            with _timed(timings, "vae_decoder"):
                chunks = -(-opts.num_frames // opts.decode_chunk_size)
                for i in range(B):
                    on_chunk = lambda k, done=i * chunks: report(callback, ProgressEvent("vae_decoder", done + k, B * chunks))  # noqa: E731
                    frames[i] = self.decode(latents[i : i + 1], opts.decode_chunk_size, progress, opts.decoder, on_chunk)

        timings.update(total=time.perf_counter() - start, unet_calls=denoiser.unet_calls, steps=opts.steps, batch=B)
        return [VideoResult(frames=frames[i], latents=latents[i : i + 1].copy(), options=clips[i][0], timings=dict(timings))
                for i in range(B)]

    def _decoder_engine(self, decoder: str) -> Engine:
        engine = self.engines.vae_decoder if decoder == "full" else self.engines.vae_decoder_fast
        if engine is None:
            raise InputError(
                "decoder='fast' needs a bundle with the distilled decoder (vae_decoder_fast), which this one lacks; "
                "export it with `python -m export.onnx --model M --fast-decoder RUN --out BUNDLE`, or use --decoder full"
            )
        return engine

    def decode(self, latents: np.ndarray, decode_chunk_size: int, progress: bool = False, decoder: str = "full",
               on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
        """``latents [1, F, C, h, w]`` (one clip) -> uint8 frames ``[F, H, W, 3]``, ``decode_chunk_size`` frames per call.

        ``decoder="fast"`` runs the bundle's distilled ``vae_decoder_fast`` (same signature).
        ``on_chunk(k)`` is called after the k-th chunk (1-based).

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
                if on_chunk is not None:
                    on_chunk(len(chunks))
        return to_uint8(np.concatenate(chunks))


def _clip_randomness(opts: GenerateOptions, count: int, batched: bool, noise, seeds) -> list[tuple[GenerateOptions, NoiseSource]]:
    """Each clip's options (its seed) and noise source: ``noise`` (one source, or one per image),
    else ``seeds`` (default ``opts.seed + i``) with ``opts.generator``."""
    if noise is not None and seeds is not None:
        raise InputError("pass noise= or seeds=, not both: explicit noise replaces the seeded generator")
    if noise is not None:
        if not batched:
            if isinstance(noise, (list, tuple)):
                raise InputError("noise= is a list but the image is a single one; pass one noise source, or a list of images")
            return [(opts, noise)]
        if not isinstance(noise, (list, tuple)) or len(noise) != count:
            got = f"{len(noise)} sources" if isinstance(noise, (list, tuple)) else "one source"
            raise InputError(f"noise= for {count} images needs a list of {count} noise sources (one per image), got {got}")
        return [(opts, n) for n in noise]
    if seeds is None:
        seeds = [opts.seed + i for i in range(count)]
    elif isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) != count:
        raise InputError(f"seeds= needs one seed per image ({count}), got {seeds!r}")
    out = []
    for seed in seeds:
        clip = dataclasses.replace(opts, seed=seed)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise InputError(f"seeds= holds {seed!r}; every seed must be a non-negative integer")
        out.append((clip, noise_source(clip.generator, int(seed))))
    return out


def require_torch_backend() -> None:
    """:class:`BackendUnavailableError` naming the fix when the torch backend's libraries are not
    installed (the runtime-only ``pip install .``); checked without importing them."""
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
