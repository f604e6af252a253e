"""Create the engines of a bundle (or of a model directory) for a backend: the one place that does.

``create_engines(bundle, "onnxruntime")`` reads the manifest (which graph variant belongs to which
network, what it takes) and returns ``{network: Engine}``; :func:`pipeline_engines` wraps all of
them in the typed :class:`Engines` the pipeline runs. The torch backend runs the PyTorch modules
of the model the manifest names (its ``model.source``), not the bundle's graphs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from contract.bundle import PRECISIONS, Bundle
from contract.environment import require_gpu_and_tensorrt, x86_without_vnni
from contract.errors import BackendUnavailableError, BundleError, ToolkitError
from contract.precision import TRT_FALLBACK, resolve
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, PREPROCESS_NETWORKS, ModelConfig, build_specs, check_network_names
from engines.base import Engine
from engines.openvino_engine import OpenVINOEngine, openvino_core
from engines.ort_engine import OnnxRuntimeEngine

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino")
# Graph variants of the bundle, plus bf16: OpenVINO's inference precision on the fp32 graphs.
RUNTIME_PRECISIONS = PRECISIONS + ("bf16",)
ALL_NETWORKS = PREPROCESS_NETWORKS + NETWORKS
KNOWN_NETWORKS = ALL_NETWORKS + OPTIONAL_NETWORKS  # optional ones are created when the bundle has them


@dataclass(frozen=True)
class Engines:
    """The engines one pipeline runs, by role; built by :func:`pipeline_engines` / :func:`model_engines`."""

    clip_preprocess: Engine  # uint8 pixels -> CLIP pixel_values
    image_encoder: Engine
    vae_encoder: Engine
    unet: Engine
    vae_decoder: Engine
    config: ModelConfig
    vae_decoder_fast: Engine | None = None  # the distilled decoder, when the bundle has one

    def all(self) -> list[Engine]:
        return [e for e in (getattr(self, name) for name in KNOWN_NETWORKS) if e is not None]


def pipeline_engines(bundle: Bundle | str | os.PathLike, backend: str = "onnxruntime", *, precision: str | None = None,
                     providers=None, threads: int | None = None, **backend_options) -> Engines:
    """Every engine a pipeline needs from ``bundle`` on ``backend`` (see :func:`create_engines`)."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    names = list(ALL_NETWORKS) + [n for n in OPTIONAL_NETWORKS if n in bundle.networks]
    engines = create_engines(bundle, backend, networks=names, precision=precision, providers=providers, threads=threads,
                             **backend_options)
    return Engines(config=bundle.config, **engines)


def model_engines(model, unet=None, device: str = "cpu") -> Engines:
    """PyTorch engines for every network straight from a model (``tiny``, a diffusers directory)."""
    engines, config = torch_engines(model, unet=unet, networks=ALL_NETWORKS, device=device)
    return Engines(config=config, **engines)


def create_engines(
    bundle: Bundle | str | os.PathLike,
    backend: str = "onnxruntime",
    *,
    networks: Sequence[str] | None = None,
    precision: str | None = None,
    providers=None,
    threads: int | None = None,
    verify: bool = True,
    ov_cache_dir: str | os.PathLike | None = None,
) -> dict[str, Engine]:
    """Engines for ``networks`` (default: all, pre-processing included) of ``bundle`` on ``backend``.

    Args:
        bundle: a :class:`Bundle` or its directory (loaded and checked with ``Bundle.load``).
        backend: ``torch`` (the PyTorch modules of the model named in the manifest),
            ``onnxruntime``, ``tensorrt`` or ``openvino`` (CPU).
        precision: which graph variant to run (``fp32``, ``fp16``, ``int8``, ``fp8``; ``None``: fp32,
            and on TensorRT the engines as built); networks without that variant run their fp32
            graph, and that is logged once. On TensorRT each network's plan must have been built for
            ``precision`` (by ``python -m export.trt --fp16/--int8/--fp8``, with its fallbacks), else
            a :class:`BundleError` says which build to run. ``bf16`` (OpenVINO
            only) runs the fp32 graphs with OpenVINO's bf16 inference precision (faster on CPUs
            with AVX-512 BF16 or AMX); OpenVINO otherwise computes in f32, as ONNX Runtime does.
        providers: ONNX Runtime execution providers (``["cpu"]`` by default; ``["cuda"]``, ...).
        threads: intra-op threads (ONNX Runtime, OpenVINO) for the CPU.
        verify: check each ONNX file against the sha256 in the manifest before using it.
        ov_cache_dir: OpenVINO's compiled-model cache directory (the next start skips compiling).

    Engines are created inactive; they load on ``activate()`` or their first ``run``. The
    pre-processing graph always runs in ONNX Runtime on the CPU (it is tiny) unless the backend
    is torch, which runs its PyTorch reference.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    names = check_network_names(ALL_NETWORKS if networks is None else networks, KNOWN_NETWORKS)
    as_built = precision is None and backend == "tensorrt"  # the plans' own precisions
    precision = precision or "fp32"
    if precision not in RUNTIME_PRECISIONS:
        raise BackendUnavailableError(f"unknown precision {precision!r}; choose one of {', '.join(RUNTIME_PRECISIONS)}")
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    ov_precision = "f32"
    if precision == "bf16":  # an inference precision, not a graph variant
        if backend != "openvino":
            raise BackendUnavailableError("precision bf16 is OpenVINO's inference precision; use --backend openvino")
        precision, ov_precision = "fp32", "bf16"
    missing = [n for n in names if n not in bundle.manifest["networks"]]
    if missing:
        raise BundleError(
            f"bundle {bundle.root} lacks {', '.join(missing)}; re-export it with this toolkit "
            f"(`python -m export.onnx --model {bundle.manifest['model'].get('source') or 'DIR'} --out {bundle.root}`)"
        )
    if backend == "torch":
        model = _load_manifest_model(bundle)
        if "vae_decoder_fast" in names:  # distilled (a directory) or TAESDV (a checkpoint file): see its manifest kind
            # optional: torch (the export extra)
            from networks.fast_decoder import open_fast_decoder

            found = open_fast_decoder(bundle.entry("vae_decoder_fast")["source"])
            model.fast_decoder = found.contract_module(model.config.scaling_factor)
        # optional: diffusers, torch (the export extra)
        from engines.torch_engine import TorchEngine

        return {name: TorchEngine(bundle.spec(name), model) for name in names}

    trt_engine = tensorrt_engine_class() if backend == "tensorrt" else None  # says what is missing, first
    if backend == "openvino":
        ov_core = openvino_core(ov_precision)  # likewise: the package, the precision, the CPU's support
    variants = _variants(bundle, names, precision)
    on_cpu = backend == "onnxruntime" and providers in (None, "cpu", ["cpu"])
    if precision == "int8" and on_cpu and variants.get("unet") == "int8" and x86_without_vnni():
        log.warning("this CPU has no VNNI: ONNX Runtime runs the int8 UNet with its exact u8u8 kernels (its fast u8s8 "
                    "kernels saturate there), so int8 may be no faster than fp32 on it; compare with "
                    "`python -m benchmarks.precision --bundle %s` (docs/precision.md)", bundle.root)
    if precision == "fp16" and on_cpu:
        log.warning("fp16 graphs on ONNX Runtime's CPU provider run no faster than fp32 (the CPU kernels are fp32; "
                    "casts are added): fp16 is for GPUs (--providers cuda, --backend tensorrt)")
    engines = {}
    for name in names:
        if backend == "tensorrt" and name not in PREPROCESS_NETWORKS:
            plan, entry = _plan(bundle, name, None if as_built else precision)
            engines[name] = trt_engine(bundle.spec(name), plan, precision=entry.get("precision", "fp32"),
                                       cache_key=entry.get("cache_key"))
            continue
        if verify:
            bundle.verify(name, variants[name])
        if backend == "openvino" and name not in PREPROCESS_NETWORKS:
            engines[name] = OpenVINOEngine(bundle.spec(name), bundle.path(name, variants[name]), precision=variants[name],
                                           inference_precision=ov_precision, threads=threads, cache_dir=ov_cache_dir,
                                           core=ov_core)
            continue
        ort_providers = None if name in PREPROCESS_NETWORKS else providers
        engines[name] = OnnxRuntimeEngine(bundle.spec(name), bundle.path(name, variants[name]), precision=variants[name],
                                          providers=ort_providers, threads=threads)
    return engines


def _variants(bundle: Bundle, names: Sequence[str], precision: str) -> dict[str, str]:
    """The graph variant each network runs (the runtime's fallback chain of :mod:`contract.precision`:
    ``precision`` where the bundle has it, else fp32); a fallback is logged once."""
    chosen = {n: resolve(bundle, n, precision)[0] for n in names}
    fallback = [n for n in names if chosen[n] != precision and n not in PREPROCESS_NETWORKS]
    if fallback:
        log.warning("bundle %s has no %s graph for %s; running fp32 there", bundle.root, precision, ", ".join(fallback))
    return chosen


def torch_engines(model, unet=None, networks: Sequence[str] | None = None, device: str = "cpu") -> tuple[dict[str, Engine], ModelConfig]:
    """PyTorch engines straight from a model: an ``SVDModel``, a diffusers directory or ``tiny``.

    Returns ``(engines, config)``; ``unet`` optionally replaces the model's UNet (a directory).
    """
    # optional: diffusers, torch (the export extra)
    from engines.torch_engine import TorchEngine

    # optional: diffusers, safetensors, torch, transformers (the export extra)
    from networks.models import SVDModel, load_model

    if not isinstance(model, SVDModel):
        model = load_model(model, unet=unet)
    specs = build_specs(model.config)
    names = check_network_names(NETWORKS if networks is None else networks, ALL_NETWORKS)
    engines = {name: TorchEngine(specs[name], model, device=device) for name in names}
    return engines, model.config


def tensorrt_engine_class():
    """The TensorRT engine class, or :class:`BackendUnavailableError` saying what is missing."""
    require_gpu_and_tensorrt("the tensorrt backend")
    # optional: torch (the export extra)
    from engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine


# --------------------------------------------------------------------------- helpers


def _load_manifest_model(bundle: Bundle):
    """Load the model (and UNet) the bundle was exported from, for the torch backend."""
    # optional: diffusers, safetensors, torch, transformers (the export extra)
    from networks.models import load_model

    info = bundle.manifest["model"]
    source, unet_source = info.get("source"), info.get("unet_source")
    if not source:
        raise BundleError(f"{bundle.root}: the manifest names no model source; use VideoPipeline.from_model(DIR) / --model DIR")
    try:
        model = load_model(source, unet=unet_source if unet_source and unet_source != source else None)
    except ToolkitError as exc:
        raise type(exc)(
            f"the torch backend loads the model the bundle was exported from ({source!r}), which failed: {exc}. "
            "Run from the model directly with --model DIR (VideoPipeline.from_model)"
        ) from exc
    if model.config != bundle.config:
        raise BundleError(
            f"the model at {source!r} no longer matches {bundle.root}'s manifest (config differs); "
            "re-export the bundle or run from the model with --model"
        )
    return model


def _plan(bundle: Bundle, name: str, precision: str | None = None):
    """The TensorRT plan file of ``name`` and its manifest entry (precision, cache key, profile).

    ``precision`` (``None``: whatever was built) must be what ``python -m export.trt`` builds for
    that request (the variant of that precision, else its fallback), so that ``--precision int8``
    never runs an fp16 plan built earlier.
    """
    entry = (bundle.manifest.get("engines") or {}).get(name)
    if not entry or not entry.get("file"):
        raise BundleError(
            f"bundle {bundle.root} has no TensorRT engine for {name!r}; build the engines with "
            f"`python -m export.trt --bundle {bundle.root}` on this GPU"
        )
    if precision is not None:
        want = resolve(bundle, name, precision, TRT_FALLBACK)[0]
        built = entry.get("precision", "fp32")
        if built != want:
            flag = "" if precision == "fp32" else f" --{precision}"
            raise BundleError(
                f"bundle {bundle.root}: the TensorRT engine of {name} was built for {built}, not {want} as "
                f"precision {precision} needs; build it with `python -m export.trt --bundle {bundle.root}{flag}`, "
                f"or run with --precision {built}"
            )
    plan = bundle.root / entry["file"]
    if not plan.is_file():
        raise BundleError(f"bundle {bundle.root}: TensorRT plan {entry['file']} is missing; rebuild the engines")
    return plan, entry
