"""The Polygraphy loader chain that turns one ONNX graph into one strongly typed TensorRT plan.

The chain reads like a sentence and nothing in it imports TensorRT until it is called::

    SaveEngine(
        EngineFromNetwork(
            NetworkFromOnnxPath("unet.int8.onnx", strongly_typed=True),
            PostprocessConfig(CreateConfig(profiles=[...], load_timing_cache=...), WorkspaceLimit(8 GiB)),
            save_timing_cache="timing.cache"),
        "unet.int8.plan")()

Precision lives in the graph, not in the builder. TensorRT 11 removed every weak-typing API
(``BuilderFlag.FP16/BF16/INT8/FP8``, precision constraints, per-layer precision and output
types, INT8 calibrators); a strongly typed network runs each tensor in the type the ONNX graph
gives it. So an fp16 engine is built from the bundle's fp16 graph (fp16 weights and activations,
explicit Casts around the ops kept fp32, float32 inputs/outputs), an int8 or fp8 engine from a
graph with QuantizeLinear/DequantizeLinear pairs (:mod:`contract.precision`). The network is
created with the ``STRONGLY_TYPED`` flag, which TensorRT 10.12+ needs for this behaviour and
11.x accepts and ignores (every 11.x network is strongly typed). ``CreateConfig`` gets no
precision argument at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contract.bundle import PRECISIONS
from contract.trt_profiles import polygraphy_profile

log = logging.getLogger(__name__)

GIB = 1 << 30
@dataclass(frozen=True)
class BuildOptions:
    """How engines are built (the command line's build flags)."""

    precision: str = "fp32"  # which graph variant of the bundle to build from: fp32 | fp16 | int8 | fp8
    workspace_gib: float | None = None  # builder workspace limit; None = TensorRT's default (all GPU memory)
    builder_optimization_level: int | None = None  # 0-5; None = TensorRT's default (3)
    timing_cache: Path | None = None  # tactic timing cache to load and update
    force: bool = False  # rebuild even when a cached engine matches

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")


class WorkspaceLimit:
    """Config postprocess step: cap the builder's workspace memory pool at ``nbytes``.

    (``CreateConfig(memory_pool_limits=...)`` needs ``tensorrt.MemoryPoolType`` keys, i.e.
    TensorRT imported while the chain is assembled; this step resolves the key when called.)
    """

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)

    def __call__(self, builder, network, config) -> None:
        # optional: tensorrt (the gpu extra)
        import tensorrt as trt

        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.nbytes)


def create_config(profile: Mapping[str, Mapping[str, list[int]]], options: BuildOptions):
    """The ``CreateConfig`` loader (optionally wrapped to cap the workspace); no precision flags."""
    # optional: polygraphy (the export extra)
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig

    cache = options.timing_cache
    config = CreateConfig(
        profiles=[polygraphy_profile(profile)],
        load_timing_cache=str(cache) if cache is not None and Path(cache).is_file() else None,
        builder_optimization_level=options.builder_optimization_level,
    )
    if options.workspace_gib is not None:
        config = PostprocessConfig(config, WorkspaceLimit(round(options.workspace_gib * GIB)))
    return config


def engine_loader(
    onnx_path: str | os.PathLike,
    profile: Mapping[str, Mapping[str, list[int]]],
    options: BuildOptions,
    save_timing_cache: str | os.PathLike | None = None,
):
    """The uncalled ``EngineFromNetwork`` loader for one graph (nothing imports TensorRT yet)."""
    # optional: polygraphy (the export extra)
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxPath

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = create_config(profile, options)
    return EngineFromNetwork(network, config, save_timing_cache=None if save_timing_cache is None else str(save_timing_cache))


def save_plan(loader, path: str | os.PathLike) -> None:
    """Build and write the plan to ``path`` (the caller makes the write atomic)."""
    # optional: polygraphy (the export extra)
    from polygraphy.backend.trt import SaveEngine

    engine = SaveEngine(loader, str(path))()
    del engine
