"""TensorRT engine: a serialized, strongly typed plan; numpy in, numpy out like every engine.

The plan's precision is the precision of the graph variant it was built from (fp32, fp16,
int8 or fp8 Q/DQ: :mod:`export.trt`); every variant keeps float32 inputs and outputs, so the
engine is fed and read the same way whatever its precision.

Per call: the input shapes are checked against the engine's optimization profile (before the
GPU is touched), the numpy inputs are copied into torch CUDA buffers (torch owns the CUDA
context and memory here; nothing else in the runtime needs it), their shapes set on the
execution context (``set_input_shape``), their device pointers bound (``set_tensor_address``)
and the engine enqueued on the current CUDA stream (``execute_async_v3``); the float32 outputs
are copied back to numpy. With ``cuda_graph=True`` the enqueue is captured once per input shape
into a CUDA graph and replayed (inputs are copied into the graph's static buffers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from polygraphy.backend.trt import EngineFromBytes
from polygraphy.exception import PolygraphyException

from contract.errors import BackendUnavailableError, BundleError, EngineCacheError, ShapeError
from contract.specs import NetworkSpec
from contract.trt_profiles import shape_in_profile
from engines.base import Engine
from engines.trt_cache import check_loadable, detect_machine, import_tensorrt, require_gpu_and_tensorrt

log = logging.getLogger(__name__)


def _key_from_manifest(plan_path: Path) -> dict | None:
    """The cache key recorded for ``plan_path`` in the manifest beside it, if any."""
    manifest = plan_path.parent / "manifest.json"
    try:
        engines = json.loads(manifest.read_text()).get("engines", {})
    except (OSError, ValueError):
        return None
    for entry in engines.values():
        if isinstance(entry, dict) and entry.get("file") == plan_path.name:
            return entry.get("cache_key")
    return None


class TensorRTEngine(Engine):
    """Runs one network's TensorRT plan.

    Args:
        spec: the network spec (input/output names, dtypes, symbolic shapes).
        plan_path: the serialized engine (``<network>.<precision>.plan`` in a bundle).
        precision: the precision of the graph the plan was built from (``fp32``, ``fp16``, ``int8``, ``fp8``);
            informational: the plan itself carries its types (strongly typed).
        cache_key: the engine's key from the manifest; read from ``manifest.json`` beside the plan
            when omitted. It gives the profile (checked before loading) and the machine the plan
            was built for (a mismatch raises :class:`EngineCacheError`).
        cuda_graph: capture each input shape's enqueue in a CUDA graph and replay it.
        device: CUDA device index (default: the current device).
    """

    backend = "tensorrt"

    def __init__(
        self,
        spec: NetworkSpec,
        plan_path: str | os.PathLike,
        precision: str = "fp32",
        cache_key: Mapping | None = None,
        cuda_graph: bool = False,
        device: int | None = None,
    ):
        super().__init__(spec, precision)
        self.plan_path = Path(plan_path)
        self.cache_key = dict(cache_key) if cache_key is not None else _key_from_manifest(self.plan_path)
        self.profile = (self.cache_key or {}).get("profile")
        self.cuda_graph = cuda_graph
        self.device_index = device
        self._engine = self._context = None
        self._graph = self._graph_shapes = None
        self._static: dict[str, torch.Tensor] = {}
        self._context_lock = threading.Lock()  # one execution context: its shapes and addresses are one call's

    @classmethod
    def from_bundle(cls, bundle, network: str, **kwargs) -> "TensorRTEngine":
        """The engine recorded in ``bundle.manifest["engines"][network]``."""
        entry = bundle.manifest.get("engines", {}).get(network)
        if not entry:
            raise BundleError(
                f"bundle {bundle.root} has no TensorRT engine for {network}; build one with "
                f"`python -m export.trt --bundle {bundle.root} --networks {network}` (add --fp16, --int8 or --fp8)"
            )
        return cls(
            bundle.spec(network),
            bundle.root / entry["file"],
            precision=entry.get("precision", "fp32"),
            cache_key=entry.get("cache_key"),
            **kwargs,
        )

    # ------------------------------------------------------------------ shapes

    def check_dims(self, dims: Mapping[str, int]) -> None:
        """Raise :class:`ShapeError` when an input shape lies outside the engine's profile."""
        if self.profile is None:
            self.activate()  # no recorded profile: read it from the deserialized engine
        for t in self.spec.inputs:
            shape = t.resolve(dims)
            bounds = self.profile.get(t.name)
            if bounds is None or shape_in_profile(shape, bounds):
                continue
            raise ShapeError(
                f"{self.spec.name}.{t.name}: shape {list(shape)} is outside the TensorRT engine's profile "
                f"(min {bounds['min']}, max {bounds['max']}; symbols {list(t.shape)}). Rebuild the engine with ranges "
                f"that cover it, e.g. `python -m export.trt --bundle {self.plan_path.parent} --networks {self.spec.name} "
                "--frames/--height/--width/--batch MIN:OPT:MAX`, or use the onnxruntime backend"
            )

    # ------------------------------------------------------------------ lifecycle

    def _activate(self) -> None:
        require_gpu_and_tensorrt("running a TensorRT engine")
        trt = import_tensorrt()
        machine = detect_machine(self.device_index)
        if self.cache_key:
            check_loadable(self.cache_key, machine, self.plan_path)
        if not self.plan_path.is_file():
            raise EngineCacheError(f"engine file {self.plan_path} is missing; build it with `python -m export.trt --bundle {self.plan_path.parent}`")

        torch.cuda.init()  # TensorRT runs in the CUDA context PyTorch owns

        self.device = torch.device("cuda", torch.cuda.current_device() if self.device_index is None else self.device_index)
        with torch.cuda.device(self.device):
            try:
                self._engine = EngineFromBytes(self.plan_path.read_bytes())()
            except PolygraphyException:
                raise EngineCacheError(
                    f"TensorRT {trt.__version__} could not deserialize {self.plan_path}: it was built with another "
                    f"TensorRT version or GPU, or the file is corrupt. Rebuild it with "
                    f"`python -m export.trt --bundle {self.plan_path.parent} --force`"
                ) from None
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(self.spec.input_names) or sorted(outputs) != sorted(self.spec.output_names):
            raise EngineCacheError(
                f"{self.plan_path} takes {inputs} -> {outputs}, but the {self.spec.name} spec has "
                f"{self.spec.input_names} -> {self.spec.output_names}; rebuild the engine from this bundle"
            )
        self._dtypes = {n: _torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
        if self.profile is None:
            self.profile = {}
            for n in inputs:
                lo, opt, hi = self._engine.get_tensor_profile_shape(n, 0)
                self.profile[n] = {"min": list(lo), "opt": list(opt), "max": list(hi)}

    def _deactivate(self) -> None:
        self._graph = self._graph_shapes = None
        self._static = {}
        self._context = None
        self._engine = None

    # ------------------------------------------------------------------ running

    def _bind_input(self, name: str, value) -> torch.Tensor:
        """The CUDA tensor whose memory TensorRT reads: a copy of the numpy ``value`` in the engine's dtype."""
        return torch.as_tensor(np.ascontiguousarray(value)).to(device=self.device, dtype=self._dtypes[name]).contiguous()

    def _enqueue(self, feeds: Mapping[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        ctx = self._context
        for name, tensor in feeds.items():
            if not ctx.set_input_shape(name, tuple(tensor.shape)):
                raise ShapeError(f"{self.spec.name}.{name}: TensorRT rejected shape {list(tensor.shape)}")
            ctx.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.spec.output_names:
            out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.spec.name} failed (see the TensorRT log above)")
        return outputs

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._context_lock, torch.cuda.device(self.device):
            feeds = {n: self._bind_input(n, inputs[n]) for n in self.spec.input_names}
            if self.cuda_graph:
                # The graph's output buffers are overwritten by the next replay: hand out copies.
                outputs = {n: o.clone() for n, o in self._run_graph(feeds).items()}
            else:
                outputs = self._enqueue(feeds, torch.cuda.current_stream(self.device))
            # .cpu() waits for the enqueued work on the current stream.
            return {n: o.to(dtype=torch.float32).cpu().numpy() for n, o in outputs.items()}

    def _run_graph(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replay the CUDA graph of these input shapes, capturing it first if needed."""
        shapes = tuple((n, tuple(t.shape)) for n, t in feeds.items())
        if self._graph is None or self._graph_shapes != shapes:
            self._capture(feeds, shapes)
        for name, tensor in feeds.items():
            self._static[name].copy_(tensor)
        self._graph.replay()
        return {n: self._static[n] for n in self.spec.output_names}

    def _capture(self, feeds: Mapping[str, torch.Tensor], shapes) -> None:
        log.info("%s: capturing a CUDA graph for %s", self.spec.name, dict(shapes))
        self._graph = None
        static_in = {n: t.clone() for n, t in feeds.items()}
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # One enqueue outside the capture: TensorRT does shape-dependent set-up on the first
        # enqueue after set_input_shape, which must not be recorded into the graph.
        with torch.cuda.stream(stream):
            outputs = self._enqueue(static_in, stream)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            self._context.execute_async_v3(stream.cuda_stream)
        self._graph, self._graph_shapes = graph, shapes
        self._static = {**static_in, **outputs}


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.bfloat16: torch.bfloat16,
        trt.int64: torch.int64,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if dtype not in table:
        raise BackendUnavailableError(f"TensorRT tensor type {dtype} has no torch equivalent in this engine")
    return table[dtype]
