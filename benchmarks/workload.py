"""What the benchmarks run: the shapes each network sees in one clip, its inputs, and its engines.

One clip of ``F`` frames at ``H x W`` pixels calls (as diffusers' StableVideoDiffusionPipeline does):

- ``image_encoder``  ``pixel_values [1, 3, 224, 224]``                      once;
- ``vae_encoder``    ``image [1, 3, H, W]``                                 once;
- ``unet``           ``sample [B, F, 8, H/8, W/8]``, ``B = 2`` with guidance   once per step;
- ``vae_decoder``    ``latent [F, 4, H/8, W/8]`` (one chunk of all frames)   once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from benchmarks.errors import BenchmarkError
from contract.bundle import MANIFEST, Bundle
from contract.environment import exporter_fingerprint
from contract.specs import NETWORKS, PREPROCESS_NETWORKS, ModelConfig, NetworkSpec, build_specs, check_resolution, expand_dims

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")


def network_dims(config: ModelConfig, frames: int, height: int, width: int, guidance: bool) -> dict[str, dict[str, int]]:
    """Pixel-space dims (``batch``/``frames``/``height``/``width``) of each network's call in one clip."""
    check_resolution(config, height, width)
    if frames < 1:
        raise BenchmarkError(f"frames must be >= 1, got {frames}")
    return {
        "image_encoder": {"batch": 1},
        "vae_encoder": {"batch": 1, "height": height, "width": width},
        "unet": {"batch": 2 if guidance else 1, "frames": frames, "height": height, "width": width},
        "vae_decoder": {"frames": frames, "height": height, "width": width},
    }


def sample_inputs(spec: NetworkSpec, config: ModelConfig, dims: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded numpy inputs for ``spec`` at pixel-space ``dims`` (latent dims from the specs' :func:`expand_dims`)."""
    return spec.sample_inputs(expand_dims(dims, config), config, seed=seed)


def describe_dims(dims: Mapping[str, int]) -> str:
    """``batch 2, frames 14, 64x64`` for tables and logs."""
    parts = [f"{k} {dims[k]}" for k in ("batch", "frames") if k in dims]
    if "height" in dims:
        parts.append(f"{dims['height']}x{dims['width']}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- bundles and engines


def default_bundle_dir(model: str | os.PathLike) -> Path:
    """Where a benchmark bundle of ``model`` is cached: ``$SFV_CACHE/bundles/<model>-<hash>``.

    Built-in models are keyed by their cached directory (whose name already hashes the config),
    other directories by their absolute path; both also by :func:`contract.environment.exporter_fingerprint`,
    so that a bundle from other exporter code is exported afresh rather than timed.
    """
    # optional: diffusers, safetensors, torch, transformers (the export extra)
    from networks.models import BUILTIN_MODELS, builtin_model_dir, cache_dir

    source = builtin_model_dir(str(model)) if str(model) in BUILTIN_MODELS else Path(model).resolve()
    key = hashlib.sha256(f"{source}\0{exporter_fingerprint()}".encode()).hexdigest()[:10]
    return cache_dir() / "bundles" / f"{Path(source).name}-{key}"


def ensure_bundle(model, bundle_dir: str | os.PathLike | None = None, progress: bool = True) -> Bundle:
    """Load the bundle at ``bundle_dir`` (default :func:`default_bundle_dir`), exporting ``model`` if it has none.

    ``model`` is a name/path or a loaded :class:`networks.models.SVDModel`. A cached bundle is
    reused only if it holds every network the pipeline runs.
    """
    # optional: diffusers, onnx, safetensors, torch, transformers (the export extra)
    from export.onnx import export_bundle

    if bundle_dir is None:
        if not isinstance(model, (str, os.PathLike)):
            raise BenchmarkError("pass bundle_dir when benchmarking a loaded model")
        bundle_dir = default_bundle_dir(model)
    bundle_dir = Path(bundle_dir)
    if (bundle_dir / MANIFEST).is_file():
        bundle = Bundle.load(bundle_dir)
        if set(PREPROCESS_NETWORKS + NETWORKS) <= set(bundle.networks):
            log.info("using the bundle in %s", bundle_dir)
            return bundle
    # Never silently: an export takes minutes for large models and the user should know which exporter ran.
    log.warning("no bundle given: exporting %s to %s with this tree's exporter (once; later runs reuse it; "
                "pass --bundle DIR to time an exported bundle)", getattr(model, "source", model), bundle_dir)
    return export_bundle(model, bundle_dir, progress=progress)


# --------------------------------------------------------------------------- configurations


class RunConfig:
    """One row of the speedup table: SVD with ``steps`` steps and guidance, or SF-V (no guidance).

    SVD: ``steps`` Euler steps, guidance rising from 1.0 to 3.0 over the frames (the UNet batch
    is doubled); SF-V: the same pipeline with ``steps=1`` and guidance 1.0, i.e. the schedule
    ``[sigma_max, 0]`` at batch 1 (paper Eq. 6, one forward pass); ``sfvrecipe``: SF-V with each
    network on the engines :mod:`benchmarks.recipe` measured fastest on this CPU; ``lcm``: the consistency sampler
    (AnimateLCM-SVD-xt's) with its guidance 1.0 -> 1.2 (batch 2), on the same UNet.
    """

    KINDS = {"svd": "SVD", "sfv": "SF-V", "sfvfast": "SF-V + fast decoder", "sfvrecipe": "SF-V, best CPU recipe",
             "lcm": "AnimateLCM sampler"}

    def __init__(self, kind: str, steps: int):
        if kind not in self.KINDS:
            raise BenchmarkError(f"unknown configuration kind {kind!r}; use svd-STEPS, lcm-STEPS, sfv-1, sfvfast-1 or sfvrecipe-1")
        if steps < 1:
            raise BenchmarkError(f"steps must be >= 1, got {steps}")
        self.kind, self.steps = kind, int(steps)

    @classmethod
    def parse(cls, text: str) -> "RunConfig":
        """``svd-25`` / ``svd-16`` / ``sfv-1``."""
        kind, _, steps = text.strip().lower().partition("-")
        if not steps.isdigit():
            raise BenchmarkError(f"configuration {text!r} is not KIND-STEPS; use e.g. svd-25, svd-16, sfv-1")
        return cls(kind, int(steps))

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.steps}"

    @property
    def label(self) -> str:
        return self.KINDS[self.kind]

    @property
    def guidance(self) -> bool:
        return self.kind in ("svd", "lcm")

    @property
    def decoder(self) -> str:
        """``fast``: the bundle's distilled temporal decoder (``vae_decoder_fast``) instead of SVD's."""
        return "fast" if self.kind == "sfvfast" else "full"

    @property
    def unet_batch(self) -> int:
        return 2 if self.guidance else 1

    def pipeline_kwargs(self) -> dict:
        """Keyword arguments for :class:`runtime.pipeline.VideoPipeline`'s call."""
        max_guidance = {"svd": 3.0, "lcm": 1.2}.get(self.kind, 1.0)
        return {"sampler": "lcm" if self.kind == "lcm" else "euler", "steps": self.steps, "min_guidance": 1.0,
                "max_guidance": max_guidance, "decoder": self.decoder}

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "steps": self.steps, "guidance": self.guidance,
                "unet_batch": self.unet_batch, "decoder": self.decoder}

    def __repr__(self) -> str:
        return f"RunConfig({self.name})"


DEFAULT_CONFIGS = ("svd-25", "svd-16", "lcm-4", "lcm-2", "sfv-1")


def synthetic_image(height: int, width: int):
    """A deterministic RGB gradient ``PIL.Image`` (the content does not change any timing)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / max(1, width - 1), 255 * y / max(1, height - 1), 128 + 0 * x], axis=-1)
    return PIL.Image.fromarray(rgb.astype(np.uint8))


# --------------------------------------------------------------------------- single network calls

CALLS = ("image_encoder", "vae_encoder", "unet_b2", "unet_b1", "vae_decoder")


def build_calls(
    config: ModelConfig, frames: int, height: int, width: int, calls: Sequence[str] = CALLS, seed: int = 0
) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """The network calls of one clip as ``{call: (network, inputs)}``.

    ``unet_b2`` is one SVD step with guidance (batch 2), ``unet_b1`` one SF-V step (batch 1);
    the other calls happen once per clip.
    """
    specs = build_specs(config)
    dims = call_dims(config, frames, height, width)
    out = {}
    for call in calls:
        if call not in dims:
            raise BenchmarkError(f"unknown call {call!r}; choose from {', '.join(CALLS)}")
        network = "unet" if call.startswith("unet") else call
        out[call] = (network, sample_inputs(specs[network], config, dims[call], seed=seed))
    return out


def call_dims(config: ModelConfig, frames: int, height: int, width: int) -> dict[str, dict[str, int]]:
    """Pixel-space dims per call name (for reports)."""
    guided = network_dims(config, frames, height, width, guidance=True)
    single = network_dims(config, frames, height, width, guidance=False)
    return {"image_encoder": guided["image_encoder"], "vae_encoder": guided["vae_encoder"], "unet_b2": guided["unet"],
            "unet_b1": single["unet"], "vae_decoder": guided["vae_decoder"]}


def shapes_info(config: ModelConfig, frames: int, height: int, width: int) -> dict:
    """Clip shapes for a result header."""
    return {"frames": frames, "height": height, "width": width,
            "latent_height": height // config.vae_scale_factor, "latent_width": width // config.vae_scale_factor,
            "calls": call_dims(config, frames, height, width)}


def model_info(model=None, bundle: Bundle | None = None, source: str | None = None) -> dict:
    """Source, UNet parameter count and config, from a loaded model or else a bundle's manifest."""
    if model is not None:
        params = sum(p.numel() for p in model.unet.parameters())
        return {"source": source or model.source, "unet_parameters": params, "config": model.config.to_json()}
    if bundle is None:
        raise BenchmarkError("model_info needs a model or a bundle")
    entry = bundle.manifest["networks"].get("unet", {})
    return {"source": source or bundle.manifest["model"]["source"], "unet_parameters": entry.get("parameters", 0),
            "config": bundle.manifest["model"]["config"]}


def resolve_shape(config: ModelConfig, frames: int | None, height: int | None, width: int | None) -> tuple[int, int, int]:
    """``(frames, height, width)`` with the model's defaults filled in, checked."""
    frames = frames or config.num_frames
    height, width = height or config.default_height, width or config.default_width
    check_resolution(config, height, width)
    if frames < 1:
        raise BenchmarkError(f"frames must be >= 1, got {frames}")
    return frames, height, width


def add_clip_args(parser) -> None:
    """The clip-shape and timing options shared by the per-call benchmark CLIs (backends, roofline)."""
    parser.add_argument("--frames", type=int, help="frames (default: the model's)")
    parser.add_argument("--height", type=int, help="pixel height (default: the model's)")
    parser.add_argument("--width", type=int, help="pixel width (default: the model's)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", type=int, help="intra-op threads for both backends (default: the usable cores)")
