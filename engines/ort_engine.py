"""ONNX Runtime engine: one exported ``.onnx`` graph in an ``InferenceSession``.

The CPU execution provider is the default; CUDA and TensorRT execution providers are chosen by
name (``"cuda"``, ``"tensorrt"`` or ORT's full provider names). numpy arrays cross the
interface unchanged; graphs with fp16 inputs get a cast here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from contract.errors import BackendUnavailableError, BundleError
from contract.specs import NetworkSpec
from engines.base import Engine

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}

Provider = str | tuple[str, dict]

# On x86-64 CPUs without VNNI (AVX2-only, or AVX-512 without VNNI) ONNX Runtime's u8s8 integer
# GEMM multiplies with vpmaddubsw, whose 16-bit intermediate saturates: the int8 UNet's output
# was 0.44 away from fp32 (rel. L2) on an AVX2-only EPYC against 0.10 with VNNI. This entry
# selects the exact u8u8 kernels on such CPUs and changes nothing on VNNI CPUs or other
# architectures (docs/precision.md). fp32 and fp16 graphs never reach those kernels.
EXACT_INT8_GEMM = ("session.x64quantprecision", "1")


# The networks a clip calls back to back (the sampler's loop). ONNX Runtime's intra-op threads
# spin after a call, waiting for the next one: that pays only where the next call is the same
# session's. After any other network they spin on while the next network runs and take its
# cores: on 2 cores at 2 threads the tiny SF-V clip's UNet call took 0.090 s after the VAE
# encoder against 0.037 s with the encoder's threads not spinning (docs/runtime.md).
SPINNING_NETWORKS = ("unet",)


def cpu_session_options(threads: int | None = None, optimize: bool = True, quiet: bool = False, spin: bool = True):
    """The ``onnxruntime.SessionOptions`` every CPU session of the toolkit uses.

    Args:
        threads: intra-op threads; ``None`` lets ONNX Runtime choose (one per core).
        optimize: all graph optimisations (``ORT_ENABLE_ALL``); ``False`` runs the graph as written.
        quiet: log errors only (ONNX Runtime warns about casts it cannot fuse in fp16 graphs).
        spin: let idle intra-op threads spin for the next call (ONNX Runtime's default); ``False``
            for a session whose next call is usually another session's (:data:`SPINNING_NETWORKS`).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        options.intra_op_num_threads = int(threads)
    if quiet:
        options.log_severity_level = 3
    options.add_session_config_entry(*EXACT_INT8_GEMM)
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def resolve_providers(providers: Sequence[Provider] | str | None) -> list[tuple[str, dict]]:
    """Normalise ``["cuda", ("TensorrtExecutionProvider", {...})]`` to ``[(full name, options)]``.

    ``None`` means the CPU provider only: a GPU provider is used only when asked for, so that a
    CPU run never depends on what an ``onnxruntime-gpu`` wheel happens to list.
    """
    if providers is None:
        providers = ["cpu"]
    elif isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out = []
    for p in providers:
        name, options = (p, {}) if isinstance(p, str) else (p[0], dict(p[1]))
        out.append((PROVIDER_ALIASES.get(name.lower(), name), options))
    if not out:
        raise BackendUnavailableError("no ONNX Runtime execution provider given; use e.g. --providers cpu")
    return out


class OnnxRuntimeEngine(Engine):
    """Runs ``path`` (an ONNX file whose inputs/outputs follow ``spec``) with ONNX Runtime.

    Args:
        spec: the network's spec (from the bundle manifest).
        path: the ``.onnx`` file (external data, if any, beside it).
        precision: ``"fp32"`` or ``"fp16"`` (what the graph was exported as); the graph's own
            input types decide the numpy dtypes fed, so fp16 graphs take fp32 tensors too.
        providers: execution providers in priority order (see :func:`resolve_providers`).
        threads: intra-op threads for the CPU provider; ``None`` lets ONNX Runtime choose.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        spec: NetworkSpec,
        path: str | os.PathLike,
        precision: str = "fp32",
        providers: Sequence[Provider] | str | None = None,
        threads: int | None = None,
    ):
        super().__init__(spec, precision)
        self.path = os.fspath(path)
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.session = None
        self._feed_types: dict[str, type] = {}

    def _activate(self) -> None:
        # The installed wheel must at least know a provider; whether it can run (a GPU, the
        # CUDA/TensorRT libraries) shows only in the session: onnxruntime-gpu lists CUDA and
        # TensorRT even on a machine without a GPU.
        installed = ort.get_available_providers()
        for name, _ in self.providers:
            if name not in installed:
                raise BackendUnavailableError(
                    f"ONNX Runtime {ort.__version__} here has no {name} (it has {', '.join(installed)}); "
                    "for CUDA/TensorRT install onnxruntime-gpu in place of onnxruntime "
                    "(`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`), or run on the CPU (--providers cpu)"
                )
        options = cpu_session_options(self.threads, spin=self.spec.name in SPINNING_NETWORKS)
        try:
            session = ort.InferenceSession(
                self.path,
                options,
                providers=[name for name, _ in self.providers],
                provider_options=[opts for _, opts in self.providers],
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            if "provider" in str(exc).lower():
                raise BackendUnavailableError(f"ONNX Runtime could not start {self.providers}: {exc}") from exc
            raise BundleError(f"ONNX Runtime cannot load {self.path} ({exc}); re-export the bundle") from exc
        active = session.get_providers()
        lost = [name for name, _ in self.providers if name not in active]
        if lost:
            raise BackendUnavailableError(
                f"ONNX Runtime could not initialise {', '.join(lost)} for {self.spec.name} (running {', '.join(active)}): "
                "no usable NVIDIA GPU, or the CUDA/cuDNN/TensorRT libraries are missing; "
                "install them, or run on the CPU (--providers cpu)"
            )
        graph_inputs = {i.name: i.type for i in session.get_inputs()}
        graph_outputs = [o.name for o in session.get_outputs()]
        if set(graph_inputs) != set(self.spec.input_names) or set(graph_outputs) != set(self.spec.output_names):
            raise BundleError(
                f"{self.path} takes {sorted(graph_inputs)} -> {graph_outputs} but the manifest says "
                f"{self.spec.input_names} -> {self.spec.output_names}; re-export the bundle"
            )
        self._feed_types = {name: _ORT_TYPES.get(t, np.float32) for name, t in graph_inputs.items()}
        self.session = session
        log.debug("%s: %s on %s", self.spec.name, self.path, ", ".join(active))

    def _deactivate(self) -> None:
        self.session = None

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(a, dtype=self._feed_types[name]) for name, a in inputs.items()}
        outputs = self.session.run(self.spec.output_names, feed)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.spec.output_names, outputs)}

    def __repr__(self) -> str:
        return f"OnnxRuntimeEngine({self.spec.name}, {self.precision}, {[n for n, _ in self.providers]})"
