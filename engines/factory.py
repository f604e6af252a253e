"""Create the engines of a bundle (or of a model directory): the one place that does.

``create_engines(bundle, "onnxruntime")`` reads the manifest (which graph variant belongs to which
network, what it takes) and returns ``{network: Engine}``; :func:`pipeline_engines` wraps all of
them in the typed :class:`Engines` the pipeline runs. Each network may run elsewhere:
``engines={"unet": ("onnxruntime", "int8"), "vae_decoder": ("openvino", "bf16")}``.

Backends are registered, not chosen by an if-chain (after Polygraphy's composable loaders: a
backend is a loader that first checks what it needs, once, and then makes lazy engines):
:data:`REGISTRY` maps a name to a :class:`Backend`, which says which precisions it runs and
how it opens. The torch backend runs the PyTorch modules of the model the manifest names (its
``model.source``), not the bundle's graphs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.bundle import PRECISIONS, Bundle
from contract.checksums import ChecksumCache
from contract.environment import require_gpu_and_tensorrt, x86_without_vnni
from contract.errors import BackendUnavailableError, BundleError, ToolkitError
from contract.precision import TRT_FALLBACK, resolve
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, PREPROCESS_NETWORKS, ModelConfig, build_specs, check_network_names
from engines.base import Engine
from engines.openvino_engine import OpenVINOEngine, openvino_core
from engines.ort_cache import CACHE_DIR_NAME, CHECKSUMS_FILE
from engines.ort_engine import OnnxRuntimeEngine

log = logging.getLogger(__name__)

# Graph variants of the bundle, plus bf16: OpenVINO's inference precision on the fp32 graphs.
RUNTIME_PRECISIONS = PRECISIONS + ("bf16",)
ALL_NETWORKS = PREPROCESS_NETWORKS + NETWORKS
KNOWN_NETWORKS = ALL_NETWORKS + OPTIONAL_NETWORKS  # optional ones are created when the bundle has them


@dataclass(frozen=True)
class Choice:
    """Where one network runs: ``backend``, ``precision`` (a graph variant, or ``bf16`` on OpenVINO;
    ``None``: fp32, on TensorRT the plan as built) and intra-op ``threads`` (``None``: the call's)."""

    backend: str
    precision: str | None = None
    threads: int | None = None

    @classmethod
    def of(cls, value) -> "Choice":
        """A :class:`Choice` from ``"openvino:bf16"``, ``("openvino", "bf16")``, ``("onnxruntime", "int8", 2)``
        or a mapping with ``backend`` / ``precision`` / ``threads`` (a recipe's entry)."""
        if isinstance(value, Choice):
            return value
        if isinstance(value, str):
            value = value.split(":")
        if isinstance(value, Mapping):
            value = (value.get("backend"), value.get("precision"), value.get("threads"))
        parts = list(value) + [None] * (3 - len(value))
        if len(parts) > 3 or not parts[0]:
            raise BackendUnavailableError(f"engine choice {value!r}: write BACKEND[:PRECISION[:THREADS]], e.g. openvino:bf16")
        threads = parts[2]
        if threads is not None and (not str(threads).isdigit() or int(threads) < 1):
            raise BackendUnavailableError(f"engine choice {value!r}: threads must be a positive integer")
        return cls(str(parts[0]), str(parts[1]) if parts[1] else None, int(threads) if threads is not None else None)

    def __str__(self) -> str:
        return ":".join(str(p) for p in (self.backend, self.precision or "fp32", self.threads) if p is not None)


def parse_engine_choices(text: str) -> dict[str, Choice]:
    """``"unet=onnxruntime:int8,vae_decoder=openvino:bf16"`` -> ``{network: Choice}`` (the CLI's ``--engines``)."""
    out = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        network, sep, choice = item.partition("=")
        if not sep or not network.strip():
            raise BackendUnavailableError(f"--engines item {item!r} is not NETWORK=BACKEND[:PRECISION[:THREADS]], "
                                          "e.g. unet=onnxruntime:int8,vae_decoder=openvino:bf16")
        out[network.strip()] = Choice.of(choice.strip())
    if not out:
        raise BackendUnavailableError("--engines is empty; write e.g. unet=onnxruntime:int8,vae_decoder=openvino:bf16")
    return out


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    ``precisions``: what :func:`create_engines` may ask of it. ``open(bundle, names, precisions,
    options)`` checks what the backend needs (a package, a GPU, the CPU's support for the
    precisions asked), once, before anything loads, and returns a ``make(name, variant,
    precision, threads) -> Engine`` that creates one (inactive) engine. ``graphs``: whether it
    runs the bundle's ONNX graph variants (their sha256 is verified and their fallback applies).
    """

    name: str
    precisions: tuple[str, ...]
    open: Callable[..., Callable[..., Engine]]
    graphs: bool = True


REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` to :data:`REGISTRY` (a later registration of the same name replaces it)."""
    REGISTRY[backend.name] = backend
    return backend


def backend(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(REGISTRY)}") from None


# --------------------------------------------------------------------------- the registered backends


def _open_torch(bundle: Bundle, names, precisions, options):
    model = _load_manifest_model(bundle)
    if "vae_decoder_fast" in names:  # distilled (a directory) or TAESDV (a checkpoint file): see its manifest kind
        # optional: torch (the export extra)
        from networks.fast_decoder import open_fast_decoder

        found = open_fast_decoder(bundle.entry("vae_decoder_fast")["source"])
        model.fast_decoder = found.contract_module(model.config.scaling_factor)
    # optional: diffusers, torch (the export extra)
    from engines.torch_engine import TorchEngine

    return lambda name, variant, precision, threads: TorchEngine(bundle.spec(name), model)


def _open_onnxruntime(bundle: Bundle, names, precisions, options):
    providers = options.get("providers")
    on_cpu = providers in (None, "cpu", ["cpu"])
    if on_cpu and "int8" in precisions and x86_without_vnni():
        log.warning("this CPU has no VNNI: ONNX Runtime runs the int8 UNet with its exact u8u8 kernels (its fast u8s8 "
                    "kernels saturate there), so int8 may be no faster than fp32 on it; compare with "
                    "`python -m benchmarks.precision --bundle %s` (docs/precision.md)", bundle.root)
    if on_cpu and "fp16" in precisions:
        log.warning("fp16 graphs on ONNX Runtime's CPU provider run no faster than fp32 (the CPU kernels are fp32; "
                    "casts are added): fp16 is for GPUs (--providers cuda, --backend tensorrt)")

    cache_dir = options.get("ort_cache_dir")  # None: no optimised-graph cache

    def make(name, variant, precision, threads):
        return OnnxRuntimeEngine(bundle.spec(name), bundle.path(name, variant), precision=variant,
                                 providers=None if name in PREPROCESS_NETWORKS else providers, threads=threads,
                                 cache_dir=cache_dir, graph_sha256=bundle.variant(name, variant).get("sha256"))

    return make


def _open_openvino(bundle: Bundle, names, precisions, options):
    # One core per inference precision asked: each says what is missing (the package, the CPU's bf16).
    cores = {p: openvino_core(p) for p in sorted({"bf16" if p == "bf16" else "f32" for p in precisions} or {"f32"})}
    cache_dir = options.get("ov_cache_dir")

    def make(name, variant, precision, threads):
        ov_precision = "bf16" if precision == "bf16" else "f32"
        core = cores.get(ov_precision) or cores.setdefault(ov_precision, openvino_core(ov_precision))
        return OpenVINOEngine(bundle.spec(name), bundle.path(name, variant), precision=variant, inference_precision=ov_precision,
                              threads=threads, cache_dir=cache_dir, core=core)

    return make


def _open_tensorrt(bundle: Bundle, names, precisions, options):
    trt_engine = tensorrt_engine_class()  # says what is missing, first

    def make(name, variant, precision, threads):
        plan, entry = _plan(bundle, name, precision)
        return trt_engine(bundle.spec(name), plan, precision=entry.get("precision", "fp32"), cache_key=entry.get("cache_key"))

    return make


register_backend(Backend("torch", ("fp32",), _open_torch, graphs=False))
register_backend(Backend("onnxruntime", PRECISIONS, _open_onnxruntime))
register_backend(Backend("tensorrt", PRECISIONS, _open_tensorrt, graphs=False))
register_backend(Backend("openvino", RUNTIME_PRECISIONS, _open_openvino))
BACKENDS = tuple(REGISTRY)  # the built-in backends' names, in the order above


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
    engines: Mapping[str, object] | None = None,
    providers=None,
    threads: int | None = None,
    verify: bool = True,
    ov_cache_dir: str | os.PathLike | None = None,
    ort_cache: bool = True,
    ort_cache_dir: str | os.PathLike | None = None,
) -> dict[str, Engine]:
    """Engines for ``networks`` (default: all, pre-processing included) of ``bundle``.

    Args:
        bundle: a :class:`Bundle` or its directory (loaded and checked with ``Bundle.load``).
        backend: where networks not named in ``engines`` run (a name in :data:`REGISTRY`):
            ``torch`` (the PyTorch modules of the model named in the manifest), ``onnxruntime``,
            ``tensorrt`` or ``openvino`` (CPU).
        precision: which graph variant those networks run (``fp32``, ``fp16``, ``int8``, ``fp8``;
            ``None``: fp32, and on TensorRT the engines as built); networks without that variant
            run their fp32 graph, and that is logged once. On TensorRT each network's plan must
            have been built for ``precision`` (by ``python -m export.trt --fp16/--int8/--fp8``,
            with its fallbacks), else a :class:`BundleError` says which build to run. ``bf16``
            (OpenVINO only) runs the fp32 graphs with OpenVINO's bf16 inference precision
            (faster on CPUs with AVX-512 BF16 or AMX); OpenVINO otherwise computes in f32, as
            ONNX Runtime does.
        engines: per-network choices that override ``backend`` / ``precision`` / ``threads``:
            ``{"unet": ("onnxruntime", "int8"), "vae_decoder": ("openvino", "bf16", 2)}`` (or
            :class:`Choice`, ``"openvino:bf16"``, a recipe's ``{"backend": ..., "precision": ...}``).
            The same checks and fallbacks apply per network.
        providers: ONNX Runtime execution providers (``["cpu"]`` by default; ``["cuda"]``, ...).
        threads: intra-op threads (ONNX Runtime, OpenVINO) for the CPU.
        verify: check each ONNX file against the sha256 in the manifest before using it.
        ov_cache_dir: OpenVINO's compiled-model cache directory (the next start skips compiling).
        ort_cache: keep ONNX Runtime's optimised graphs (CPU sessions) and the graphs' checked
            sha256 (by file stat) in ``ort_cache_dir``, so that the next start skips optimising and
            hashing (:mod:`engines.ort_cache`); a directory that is not writable is not used.
        ort_cache_dir: that cache's directory (default: ``ort-cache`` inside the bundle).

    Engines are created inactive; they load on ``activate()`` or their first ``run``. The
    pre-processing graph always runs in ONNX Runtime on the CPU (it is tiny) unless the backend
    is torch, which runs its PyTorch reference. One INFO line per network says what runs where.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    names = check_network_names(ALL_NETWORKS if networks is None else networks, KNOWN_NETWORKS)
    choices = plan_engines(names, Choice(backend, precision, threads), engines)
    missing = [n for n in names if n not in bundle.manifest["networks"]]
    if missing:
        raise BundleError(
            f"bundle {bundle.root} lacks {', '.join(missing)}; re-export it with this toolkit "
            f"(`python -m export.onnx --model {bundle.manifest['model'].get('source') or 'DIR'} --out {bundle.root}`)"
        )
    # Graph variants, with the runtime's fallback to fp32 (logged once per precision).
    variants = {}
    for want in sorted({c.precision for n, c in choices.items() if REGISTRY[c.backend].graphs}):
        picked = [n for n, c in choices.items() if c.precision == want and REGISTRY[c.backend].graphs]
        variants.update(_variants(bundle, picked, "fp32" if want == "bf16" else want))
    # Each backend opens once (its checks run before any engine loads), then makes its engines.
    cache_dir = Path(ort_cache_dir) if ort_cache_dir is not None else bundle.root / CACHE_DIR_NAME
    checksums = ChecksumCache(cache_dir / CHECKSUMS_FILE) if ort_cache and verify else None
    options = {"providers": providers, "ov_cache_dir": ov_cache_dir, "ort_cache_dir": cache_dir if ort_cache else None}
    makers = {}
    for name in dict.fromkeys(c.backend for c in choices.values()):
        used = [n for n, c in choices.items() if c.backend == name]
        # What each of its networks runs: the variant resolved above, or bf16 (OpenVINO's arithmetic); None: plans as built.
        asked = {"bf16" if choices[n].precision == "bf16" else variants.get(n, choices[n].precision) for n in used} - {None}
        makers[name] = REGISTRY[name].open(bundle, used, asked, options)
    out = {}
    for name in names:
        choice = choices[name]
        variant = variants.get(name)
        if verify and variant is not None:
            bundle.verify(name, variant, checksums)
        out[name] = makers[choice.backend](name, variant, choice.precision, choice.threads)
        if name not in PREPROCESS_NETWORKS:
            log.info("%s: %s", name, describe_engine(out[name], choice))
    return out


def describe_engine(engine: Engine, choice: Choice) -> str:
    """What runs where, in words: ``openvino bf16 (vae_decoder.onnx), 2 threads``."""
    precision = "bf16" if choice.precision == "bf16" else engine.precision
    if choice.backend == "tensorrt" and choice.precision is None:
        precision += " (as built)"
    path = getattr(engine, "path", None)
    return (f"{choice.backend} {precision}" + (f" ({os.path.basename(path)})" if path else "")
            + (f", {choice.threads} threads" if choice.threads else ""))


def plan_engines(names: Sequence[str], default: Choice, engines: Mapping[str, object] | None = None) -> dict[str, Choice]:
    """``{network: Choice}``: ``engines``'s choice where it names the network, else ``default``; checked.

    The pre-processing graph runs on ONNX Runtime's CPU provider (torch when ``default`` is
    torch); an unknown backend, a precision the backend does not run, or a choice for a network
    not asked for is a one-line error.
    """
    engines = {k: Choice.of(v) for k, v in (engines or {}).items()}
    check_network_names(list(engines), KNOWN_NETWORKS)
    unused = [n for n in engines if n not in names]
    if unused:
        raise BackendUnavailableError(f"engine choices for {', '.join(unused)}, which this call does not create "
                                      f"(it creates {', '.join(names)})")
    chosen = {}
    for name in names:
        choice = engines.get(name, default)
        if choice.threads is None:
            choice = Choice(choice.backend, choice.precision, default.threads)
        if name in PREPROCESS_NETWORKS:
            if name in engines:
                raise BackendUnavailableError(f"{name} always runs on ONNX Runtime's CPU provider (or torch); leave it out")
            choice = Choice("torch" if default.backend == "torch" else "onnxruntime", None, default.threads)
        chosen[name] = _check_choice(name, choice)
    return chosen


def _check_choice(name: str, choice: Choice) -> Choice:
    if choice.precision is not None and choice.precision not in RUNTIME_PRECISIONS:
        raise BackendUnavailableError(f"unknown precision {choice.precision!r}; choose one of {', '.join(RUNTIME_PRECISIONS)}")
    found = backend(choice.backend)
    if choice.precision == "bf16" and "bf16" not in found.precisions:  # an inference precision, not a graph variant
        raise BackendUnavailableError("precision bf16 is OpenVINO's inference precision; use --backend openvino"
                                      f"{'' if name == 'unet' else f' (or {name}=openvino:bf16)'}")
    if choice.precision is not None and choice.precision not in found.precisions:
        raise BackendUnavailableError(f"{name}: backend {choice.backend} runs {', '.join(found.precisions)}, not {choice.precision}")
    if choice.precision is None and choice.backend != "tensorrt":  # TensorRT: None = the plans as built
        choice = Choice(choice.backend, "fp32", choice.threads)
    return choice


def _variants(bundle: Bundle, names: Sequence[str], precision: str) -> dict[str, str]:
    """The graph variant each network runs (the runtime's fallback chain of :mod:`contract.precision`:
    ``precision`` where the bundle has it, else fp32); a fallback is logged once."""
    chosen = {n: resolve(bundle, n, precision or "fp32")[0] for n in names}
    fallback = [n for n in names if chosen[n] != (precision or "fp32") and n not in PREPROCESS_NETWORKS]
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
