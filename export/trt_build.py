"""The Polygraphy loader chain that turns one ONNX graph into one TensorRT plan.

The chain reads like a sentence and nothing in it imports TensorRT until it is called::

    SaveEngine(
        EngineFromNetwork(
            PostprocessNetwork(NetworkFromOnnxPath("vae_decoder.onnx"), KeepLayersFp32(...)),
            PostprocessConfig(CreateConfig(fp16=True, profiles=[...], precision_constraints="obey", ...),
                              WorkspaceLimit(8 GiB)),
            save_timing_cache="timing.cache"),
        "vae_decoder.fp16.plan")()

Precision policy (``--fp16``):

- UNet and CLIP image encoder: fp16 everywhere TensorRT finds it faster (``CreateConfig(fp16=True)``).
- VAE encoder and temporal decoder: fp16, except the layers built from the spec's
  ``fp32_op_types`` (GroupNorm/InstanceNorm, ReduceMean, Pow, Sqrt, Softmax: the mean/variance
  reductions whose sums of squares overflow fp16's 65504 on VAE activations, giving NaN/Inf), which
  get ``layer.precision = float32`` and fp32 outputs, enforced with
  ``precision_constraints="obey"``. ``--vae-fp32`` instead builds both VAE networks entirely in
  fp32 (the fallback when a TensorRT version cannot honour the constraints).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from export.specs import NetworkSpec

log = logging.getLogger(__name__)

GIB = 1 << 30
# TensorRT layer types that the ONNX op types of NetworkSpec.fp32_op_types always become.
# Pow and Sqrt become ELEMENTWISE / UNARY layers, which are matched by ONNX node name only.
_LAYER_TYPES = {
    "GroupNormalization": "NORMALIZATION",
    "InstanceNormalization": "NORMALIZATION",
    "LayerNormalization": "NORMALIZATION",
    "ReduceMean": "REDUCE",
    "Softmax": "SOFTMAX",
}


@dataclass(frozen=True)
class BuildOptions:
    """How engines are built (the command line's build flags)."""

    fp16: bool = False  # fp16 for the UNet and CLIP; VAE mixed (fp32 norms) unless vae_fp32
    vae_fp32: bool = False  # build the VAE networks entirely in fp32 under --fp16
    workspace_gib: float | None = None  # builder workspace limit; None = TensorRT's default (all GPU memory)
    builder_optimization_level: int | None = None  # 0-5; None = TensorRT's default (3)
    timing_cache: Path | None = None  # tactic timing cache to load and update
    force: bool = False  # rebuild even when a cached engine matches


def network_precision(spec: NetworkSpec, options: BuildOptions) -> tuple[str, tuple[str, ...]]:
    """``(precision, ONNX op types kept in fp32)`` for one network under ``options``."""
    if not options.fp16:
        return "fp32", ()
    if spec.fp32_op_types:
        return ("fp32", ()) if options.vae_fp32 else ("fp16", tuple(spec.fp32_op_types))
    return "fp16", ()


def fp32_node_names(onnx_path: str | os.PathLike, op_types: Iterable[str]) -> list[str]:
    """Names of the graph's nodes whose op type is in ``op_types`` (weights are not loaded)."""
    import onnx

    op_types = set(op_types)
    if not op_types:
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in op_types and n.name]


class KeepLayersFp32:
    """Network postprocess step: run the layers built from some ONNX nodes in fp32.

    TensorRT's ONNX parser (onnx-tensorrt ``ImporterContext::registerLayer``) names a node's
    layer after the node and further layers of the same node ``<node name>_<counter>``, so layers
    are matched by name, and by the layer type an op always becomes. Only layers with
    floating-point outputs are touched (shape arithmetic is not).
    """

    def __init__(self, node_names: Iterable[str], op_types: Iterable[str]):
        self.node_names = frozenset(node_names)
        self.layer_types = tuple(sorted({_LAYER_TYPES[t] for t in op_types if t in _LAYER_TYPES}))
        self.__name__ = "KeepLayersFp32"  # Polygraphy logs the step by this name
        self.kept = 0

    def matches(self, layer_name: str, layer_type: str) -> bool:
        if layer_type in self.layer_types or layer_name in self.node_names:
            return True
        # Further layers of a node: "<node name>_<counter>"
        head, sep, counter = layer_name.rpartition("_")
        return bool(sep) and counter.isdigit() and head in self.node_names

    def __call__(self, network) -> None:
        import tensorrt as trt

        floats = (trt.float32, trt.float16)
        self.kept = 0
        for layer in network:
            if not self.matches(layer.name, layer.type.name):
                continue
            outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
            if not outputs or any(t.dtype not in floats for t in outputs):
                continue
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
            self.kept += 1
        log.info("kept %d layers in fp32 (%d ONNX nodes of types %s)", self.kept, len(self.node_names), ", ".join(self.layer_types))


class WorkspaceLimit:
    """Config postprocess step: cap the builder's workspace memory pool at ``nbytes``.

    (``CreateConfig(memory_pool_limits=...)`` needs ``tensorrt.MemoryPoolType`` keys, i.e.
    TensorRT imported while the chain is assembled; this step resolves the key when called.)
    """

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)

    def __call__(self, builder, network, config) -> None:
        import tensorrt as trt

        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.nbytes)


def create_config(profile: Mapping[str, Mapping[str, list[int]]], precision: str, fp32_layers: bool, options: BuildOptions):
    """The ``CreateConfig`` loader (optionally wrapped to cap the workspace)."""
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig

    from export.trt_profiles import polygraphy_profile

    cache = options.timing_cache
    config = CreateConfig(
        fp16=precision == "fp16",
        profiles=[polygraphy_profile(profile)],
        # "obey": a layer set to fp32 must run in fp32 (fails the build rather than silently fp16)
        precision_constraints="obey" if fp32_layers else None,
        load_timing_cache=str(cache) if cache is not None and Path(cache).is_file() else None,
        builder_optimization_level=options.builder_optimization_level,
    )
    if options.workspace_gib is not None:
        config = PostprocessConfig(config, WorkspaceLimit(round(options.workspace_gib * GIB)))
    return config


def engine_loader(
    onnx_path: str | os.PathLike,
    profile: Mapping[str, Mapping[str, list[int]]],
    precision: str,
    fp32_nodes: Iterable[str],
    fp32_op_types: Iterable[str],
    options: BuildOptions,
    save_timing_cache: str | os.PathLike | None = None,
):
    """The uncalled ``EngineFromNetwork`` loader for one network (nothing imports TensorRT yet)."""
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxPath, PostprocessNetwork

    fp32_op_types = tuple(fp32_op_types)
    network = NetworkFromOnnxPath(str(onnx_path))
    if fp32_op_types:
        network = PostprocessNetwork(network, KeepLayersFp32(fp32_nodes, fp32_op_types), name="KeepLayersFp32")
    config = create_config(profile, precision, bool(fp32_op_types), options)
    return EngineFromNetwork(network, config, save_timing_cache=None if save_timing_cache is None else str(save_timing_cache))


def save_plan(loader, path: str | os.PathLike) -> None:
    """Build and write the plan to ``path`` (the caller makes the write atomic)."""
    from polygraphy.backend.trt import SaveEngine

    engine = SaveEngine(loader, str(path))()
    del engine
