"""OpenVINO engine: one bundle ``.onnx`` graph compiled by OpenVINO's CPU plugin.

OpenVINO reads the bundle's ONNX graphs as they are (fp32, and the int8 Q/DQ variants, whose
quantised operations it runs with int8 kernels). What it adds over ONNX Runtime on a CPU is the
*inference precision*: with ``bf16`` the plugin runs matrix multiplications and convolutions in
bfloat16 on CPUs that have it (AVX-512 BF16, AMX), roughly halving their cost.

The default here is ``f32``, although OpenVINO itself silently picks bf16 on such CPUs: with f32
the frames equal ONNX Runtime's (within a uint8 level), so changing the backend never changes a
result unless the user asks for speed with ``inference_precision="bf16"`` (about 1% relative
error per network call; see docs/openvino.md).

On CPUs without AVX-512 OpenVINO runs its AVX2 kernels, and there 2026.4.1's CPU plugin computed
SVD's temporal self-attention wrongly at 8 frames and more (a Zen 2 EPYC; a Haswell emulated by
qemu) unless its runtime kernel cache was off: :func:`cpu_workarounds` turns it off on such CPUs
(docs/openvino.md, "AVX2-only CPUs").

Numpy arrays cross the interface; outputs are float32.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from contract.errors import BackendUnavailableError, BundleError, ToolkitError
from contract.specs import NetworkSpec
from engines.base import Engine

try:  # numpy's CPU dispatch table (its module moved in numpy 2)
    from numpy._core._multiarray_umath import __cpu_features__ as _NUMPY_CPU_FEATURES
except ImportError:  # numpy < 2
    try:
        from numpy.core._multiarray_umath import __cpu_features__ as _NUMPY_CPU_FEATURES
    except ImportError:
        _NUMPY_CPU_FEATURES = {}

log = logging.getLogger(__name__)

INSTALL = "`pip install -e .[openvino]` (or `pip install openvino`)"
DEVICE = "CPU"
# Our name -> (OpenVINO element type, the device capability that runs it natively).
INFERENCE_PRECISIONS = {"f32": ("f32", "FP32"), "bf16": ("bf16", "BF16")}
# The CPU plugin's runtime cache keeps the kernels it prepared (per node type and shapes) for
# reuse by other nodes and later calls. With the AVX2 kernels (OpenVINO 2026.4.1, tiny SVD UNet)
# the fused temporal self-attention (a Snippets MHA subgraph) is wrong from 8 frames on while the
# cache is on: relative error 0.27 on the UNet's output against ONNX Runtime; 1.3e-6 with the
# cache off (also with Snippets off, which however unfuses every attention and materialises its
# score matrix). 0 = no cache: a node prepares its kernels itself when its input shapes change.
# An OpenVINO CPU-plugin property (ov::intel_cpu::cpu_runtime_cache_capacity), not in SUPPORTED_PROPERTIES.
AVX2_WORKAROUNDS = {"CPU_RUNTIME_CACHE_CAPACITY": 0}


def import_openvino():
    """The ``openvino`` module, or :class:`BackendUnavailableError` with the install command."""
    try:
        # optional: openvino (the openvino extra)
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the openvino backend needs OpenVINO, which is not installed ({exc}); install it with {INSTALL}, "
            "or use --backend onnxruntime"
        ) from None
    return openvino


def check_inference_precision(precision: str) -> str:
    """``precision`` if OpenVINO's CPU plugin can be asked for it, else a one-line error."""
    if precision not in INFERENCE_PRECISIONS:
        raise ToolkitError(
            f"unknown OpenVINO inference precision {precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)} "
            "(f32 matches ONNX Runtime, bf16 is faster on CPUs with AVX-512 BF16 or AMX)"
        )
    return precision


def device_capabilities(core, device: str = DEVICE) -> list[str]:
    """The device's ``OPTIMIZATION_CAPABILITIES``, e.g. ``['BF16', 'FP32', 'INT8', ...]`` on a CPU with AVX-512 BF16."""
    # optional: openvino (the openvino extra)
    import openvino.properties.device as device_props

    return [str(c) for c in core.get_property(device, device_props.capabilities)]


def check_device_supports(core, precision: str, device: str = DEVICE) -> None:
    """Raise :class:`BackendUnavailableError` unless ``device`` runs ``precision`` natively.

    OpenVINO would otherwise fall back quietly (to f32, or to a slow emulation), so a user who
    asked for bf16 would get neither the speed nor a word about why.
    """
    capability = INFERENCE_PRECISIONS[check_inference_precision(precision)][1]
    have = device_capabilities(core, device)
    if capability not in have:
        # optional: openvino (the openvino extra)
        import openvino.properties.device as device_props

        name = core.get_property(device, device_props.full_name)
        raise BackendUnavailableError(
            f"OpenVINO inference precision {precision} needs a CPU with {capability} support (AVX-512 BF16 or AMX); "
            f"this {device} ({name}) offers {', '.join(have)}. Use the f32 inference precision: --precision fp32 "
            "(the default) or precision=\"fp32\""
        )


def cpu_has_avx512() -> bool:
    """Whether the CPU has AVX-512 (F, CD, BW, DQ, VL: oneDNN's ``avx512_core``), as CPUID reports it.

    Read through numpy's CPU dispatch, which asks CPUID as oneDNN does (``/proc/cpuinfo`` would
    describe the host under an emulator such as ``qemu-x86_64 -cpu Haswell``). ``False`` where
    numpy cannot say: the workarounds are safe on any CPU.
    """
    return bool(_NUMPY_CPU_FEATURES.get("AVX512_SKX", False))


def cpu_workarounds(avx512: bool | None = None) -> dict:
    """Compile properties that keep OpenVINO's results right on this CPU (``avx512``: the CPU's,
    by default :func:`cpu_has_avx512`): :data:`AVX2_WORKAROUNDS` where it has no AVX-512."""
    if avx512 is None:
        avx512 = cpu_has_avx512()
    return {} if avx512 else dict(AVX2_WORKAROUNDS)


def openvino_core(inference_precision: str = "f32"):
    """An ``openvino.Core`` whose CPU can run ``inference_precision``: every user error before anything loads."""
    check_inference_precision(inference_precision)
    core = import_openvino().Core()
    check_device_supports(core, inference_precision)
    return core


class OpenVINOEngine(Engine):
    """Runs ``path`` (an ONNX file whose inputs/outputs follow ``spec``) with OpenVINO on the CPU.

    Args:
        spec: the network's spec (from the bundle manifest).
        path: the ``.onnx`` file (external data, if any, beside it).
        precision: the graph variant (``fp32``, ``fp16``, ``int8``), as for the other engines;
            inputs are cast to the graph's own input types.
        inference_precision: ``f32`` (default; equals ONNX Runtime) or ``bf16`` (faster where
            the CPU has AVX-512 BF16 or AMX; an error elsewhere).
        threads: OpenVINO's inference threads (``INFERENCE_NUM_THREADS``); ``None`` lets it choose.
        cache_dir: where OpenVINO keeps compiled models, so that the next start imports the
            compiled model instead of compiling (``CACHE_DIR``; OpenVINO keys each entry by
            the graph, the device and these options).
        core: an ``openvino.Core`` to share between engines (one is made otherwise).
    """

    backend = "openvino"

    def __init__(
        self,
        spec: NetworkSpec,
        path: str | os.PathLike,
        precision: str = "fp32",
        inference_precision: str = "f32",
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        core=None,
    ):
        super().__init__(spec, precision)
        self.path = os.fspath(path)
        self.inference_precision = check_inference_precision(inference_precision)
        self.threads = threads
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.core = core
        self.compiled = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # idle infer requests, one per concurrent call
        self._feed_types: dict[str, np.dtype] = {}
        self._outputs: dict = {}

    def compile_config(self) -> dict:
        """The properties passed to ``compile_model``."""
        ov = import_openvino()
        # optional: openvino (the openvino extra)
        import openvino.properties as props

        # optional: openvino (the openvino extra)
        import openvino.properties.hint as hints

        config = {
            hints.inference_precision: getattr(ov.Type, INFERENCE_PRECISIONS[self.inference_precision][0]),
            # One request at a time (the pipeline is sequential): one stream gets every thread.
            props.num_streams: 1,
            **cpu_workarounds(),
        }
        if self.threads:
            config[props.inference_num_threads] = int(self.threads)
        if self.cache_dir:
            config[props.cache_dir] = self.cache_dir
        return config

    def _activate(self) -> None:
        ov = import_openvino()
        core = self.core if self.core is not None else ov.Core()
        check_device_supports(core, self.inference_precision)
        config = self.compile_config()
        if self.cache_dir:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        try:
            # Compiling from the path (not a read model) lets a cache hit skip reading the graph.
            compiled = core.compile_model(self.path, DEVICE, config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"OpenVINO cannot compile {self.path} ({first}); re-export the bundle") from exc
        # A port may carry several tensor names (the ONNX name and those of folded nodes): match any.
        inputs = _ports(compiled.inputs, self.spec.input_names)
        outputs = _ports(compiled.outputs, self.spec.output_names)
        if len(compiled.inputs) != len(inputs) or None in inputs.values() or None in outputs.values():
            have_in = sorted(n for port in compiled.inputs for n in port.get_names())
            have_out = sorted(n for port in compiled.outputs for n in port.get_names())
            raise BundleError(
                f"{self.path} takes {have_in} -> {have_out} but the manifest says "
                f"{self.spec.input_names} -> {self.spec.output_names}; re-export the bundle"
            )
        self._feed_types = {name: port.get_element_type().to_dtype() for name, port in inputs.items()}
        self._outputs = outputs
        self.compiled = compiled
        self._requests = queue.SimpleQueue()
        self._requests.put(compiled.create_infer_request())
        log.debug("%s: %s on OpenVINO %s, %s", self.spec.name, self.path, ov.__version__, self.inference_precision)

    def _deactivate(self) -> None:
        self._requests = queue.SimpleQueue()
        self.compiled = None

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(value, dtype=self._feed_types[name]) for name, value in inputs.items()}
        # An infer request holds its inputs and outputs: one per call in flight (threads), reused after.
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            # Outputs are copied out (share_outputs=False, the default): the next call reuses the buffers.
            results = request.infer(feed)
            return {name: np.asarray(results[self._outputs[name]], dtype=np.float32) for name in self.spec.output_names}
        finally:
            self._requests.put(request)

    def __repr__(self) -> str:
        return f"OpenVINOEngine({self.spec.name}, {self.precision}, {self.inference_precision})"


def _ports(ports, names) -> dict:
    """``{name: the port carrying that tensor name, or None}``."""
    return {name: next((port for port in ports if name in port.get_names()), None) for name in names}
