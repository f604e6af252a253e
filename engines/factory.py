"""Create the engines of a bundle (or of a model directory) for a backend: the one place that does.

``create_engines(bundle, "onnxruntime")`` reads the manifest (which file belongs to which
network, what it takes) and returns ``{network: Engine}`` in pipeline order. The torch backend
loads the model the manifest names; ``torch_engines(model)`` skips the bundle altogether.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence

from engines.base import Engine
from export.bundle import Bundle
from export.errors import BackendUnavailableError, BundleError, ToolkitError
from export.specs import NETWORKS, ModelConfig, build_specs

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def create_engines(
    bundle: Bundle | str | os.PathLike,
    backend: str = "onnxruntime",
    *,
    networks: Sequence[str] | None = None,
    providers=None,
    threads: int | None = None,
    verify: bool = True,
) -> dict[str, Engine]:
    """Engines for ``networks`` (default: all four) of ``bundle`` on ``backend``.

    Args:
        bundle: a :class:`Bundle` or its directory (loaded and checked with ``Bundle.load``).
        backend: ``torch`` (the model named in the manifest), ``onnxruntime`` or ``tensorrt``.
        providers: ONNX Runtime execution providers (``["cpu"]`` by default; ``["cuda"]``, ...).
        threads: intra-op threads (ONNX Runtime) for the CPU.
        verify: check each ONNX file against the sha256 in the manifest before using it.

    Engines are created inactive; they load on ``activate()`` or their first ``run``.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    names = _network_names(networks)
    if backend == "torch":
        model = _load_manifest_model(bundle)
        from engines.torch_engine import TorchEngine

        return {name: TorchEngine(bundle.spec(name), model) for name in names}
    if backend == "onnxruntime":
        from engines.ort_engine import OnnxRuntimeEngine

        engines = {}
        for name in names:
            if verify:
                bundle.verify(name)
            precision = bundle.entry(name).get("precision", "fp32")
            engines[name] = OnnxRuntimeEngine(
                bundle.spec(name), bundle.path(name), precision=precision, providers=providers, threads=threads
            )
        return engines
    if backend == "tensorrt":
        engine_cls = tensorrt_engine_class()
        engines = {}
        for name in names:
            plan, entry = _plan(bundle, name)
            engines[name] = engine_cls(
                bundle.spec(name), plan, precision=entry.get("precision", "fp32"), cache_key=entry.get("cache_key")
            )
        return engines
    raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def torch_engines(model, unet=None, networks: Sequence[str] | None = None, device: str = "cpu") -> tuple[dict[str, Engine], ModelConfig]:
    """PyTorch engines straight from a model: an ``SVDModel``, a diffusers directory or ``tiny``.

    Returns ``(engines, config)``; ``unet`` optionally replaces the model's UNet (a directory).
    """
    from engines.torch_engine import TorchEngine
    from export.models import SVDModel, load_model

    if not isinstance(model, SVDModel):
        model = load_model(model, unet=unet)
    specs = build_specs(model.config)
    engines = {name: TorchEngine(specs[name], model, device=device) for name in _network_names(networks)}
    return engines, model.config


def tensorrt_engine_class():
    """The TensorRT engine class, or :class:`BackendUnavailableError` saying what is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError(
            "the tensorrt backend needs NVIDIA TensorRT, which is not installed: on a machine with an NVIDIA GPU "
            "run `pip install -e .[gpu]` (TensorRT >= 10), or use --backend onnxruntime"
        )
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "the tensorrt backend needs a CUDA GPU, and PyTorch sees none (no NVIDIA GPU/driver, or a CPU-only "
            "torch build); run on a GPU machine with a CUDA build of torch, or use --backend onnxruntime"
        )
    from engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine


# --------------------------------------------------------------------------- helpers


def _network_names(networks: Sequence[str] | None) -> list[str]:
    if networks is None:
        return list(NETWORKS)
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        raise ToolkitError(f"unknown network(s) {unknown}; the networks are {', '.join(NETWORKS)}")
    return [n for n in NETWORKS if n in networks]


def _load_manifest_model(bundle: Bundle):
    """Load the model (and UNet) the bundle was exported from, for the torch backend."""
    from export.models import load_model

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


def _plan(bundle: Bundle, name: str):
    """The TensorRT plan file of ``name`` and its manifest entry (precision, cache key, profile)."""
    entry = (bundle.manifest.get("engines") or {}).get(name)
    if not entry or not entry.get("file"):
        raise BundleError(
            f"bundle {bundle.root} has no TensorRT engine for {name!r}; build the engines with "
            f"`python -m export.trt --bundle {bundle.root}` on this GPU"
        )
    plan = bundle.root / entry["file"]
    if not plan.is_file():
        raise BundleError(f"bundle {bundle.root}: TensorRT plan {entry['file']} is missing; rebuild the engines")
    return plan, entry
