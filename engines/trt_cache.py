"""Engine cache keys: a TensorRT plan is only valid for the graph, TensorRT version and GPU it was built for.

Each engine in a bundle's manifest carries a key::

    {"onnx_sha256": ..., "tensorrt_version": "11.4.0", "gpu_name": "NVIDIA H100 80GB HBM3",
     "compute_capability": "9.0", "precision": "fp16", "profile": {...}}

``onnx_sha256`` identifies the graph variant the engine was built from (``unet.fp16.onnx``,
``unet.int8.onnx``, ...; with its external data), so that re-exporting or re-calibrating a
variant invalidates its engine; the precision lives in that graph (strongly typed build).

``python -m export.trt`` reuses an engine whose key equals the key it would build with and
rebuilds otherwise; :class:`engines.tensorrt_engine.TensorRTEngine` refuses to load an engine
whose machine fields (TensorRT version, GPU, compute capability) differ from this machine,
with :class:`EngineCacheError` naming the field and the rebuild command.

The machine is detected with ``import tensorrt`` and ``torch.cuda`` (never with ONNX Runtime's
provider list, which names CUDA and TensorRT even where there is no GPU).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from contract.bundle import sha256_file
from contract.environment import (  # noqa: F401 (re-exported)
    INSTALL_HINT, check_tensorrt_version, missing_requirements, require_gpu_and_tensorrt,
)
from contract.errors import BackendUnavailableError, EngineCacheError

KEY_FIELDS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision", "profile")
MACHINE_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability")


@dataclass(frozen=True)
class MachineInfo:
    """What an engine is tied to besides its graph: the TensorRT version and the GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0" for Hopper

    def to_json(self) -> dict:
        return asdict(self)


def import_tensorrt():
    """``import tensorrt`` or raise :class:`BackendUnavailableError` with the fix."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"TensorRT is not available: the tensorrt module cannot be imported ({exc}); {INSTALL_HINT}"
        ) from None


def detect_machine(device: int | None = None) -> MachineInfo:
    """TensorRT version, GPU name and compute capability of CUDA device ``device`` (default: current).

    Raises :class:`BackendUnavailableError` for a TensorRT older than 10.12 (no strongly typed
    ONNX networks), naming the version needed.
    """
    require_gpu_and_tensorrt()
    trt = import_tensorrt()
    check_tensorrt_version(trt.__version__)
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return MachineInfo(
        tensorrt_version=str(trt.__version__),
        gpu_name=torch.cuda.get_device_name(index),
        compute_capability=f"{major}.{minor}",
    )


def cache_key(
    onnx_sha256: str,
    machine: MachineInfo,
    precision: str,
    profile: Mapping[str, Mapping[str, list[int]]],
) -> dict:
    """The key of one engine (plain JSON; equal keys mean the engine can be reused).

    ``onnx_sha256`` is the digest of the graph variant built from (see ``export.trt.onnx_digest``).
    """
    return {
        "onnx_sha256": onnx_sha256,
        **machine.to_json(),
        "precision": precision,
        "profile": {name: {k: list(v[k]) for k in ("min", "opt", "max")} for name, v in profile.items()},
    }


def key_mismatches(recorded: Mapping, current: Mapping, fields: tuple[str, ...] = KEY_FIELDS) -> list[str]:
    """Human-readable differences between two keys, one per field (empty when they match)."""
    out = []
    for field in fields:
        a, b = recorded.get(field), current.get(field)
        if a != b:
            if field == "profile":
                out.append("profile: the engine's min/opt/max shapes differ from the requested ones")
            elif field == "onnx_sha256":
                out.append("onnx_sha256: the ONNX graph variant changed since the engine was built")
            else:
                out.append(f"{field}: engine {a!r}, here {b!r}")
    return out


@dataclass(frozen=True)
class CacheDecision:
    reuse: bool
    reason: str


def lookup(bundle_root: Path, entry: Mapping | None, key: Mapping) -> CacheDecision:
    """Whether the engine recorded in ``entry`` (a manifest ``engines`` item) can be reused for ``key``."""
    if not entry:
        return CacheDecision(False, "no engine recorded")
    plan = Path(bundle_root) / str(entry.get("file", ""))
    if not entry.get("file") or not plan.is_file():
        return CacheDecision(False, f"engine file {entry.get('file')!r} is missing")
    diffs = key_mismatches(entry.get("cache_key") or {}, key)
    if diffs:
        return CacheDecision(False, "; ".join(diffs))
    want = entry.get("sha256")
    if want and sha256_file(plan) != want:
        return CacheDecision(False, f"{plan.name} does not match its recorded sha256 (changed or corrupt)")
    return CacheDecision(True, "cache key matches")


def check_loadable(recorded: Mapping, machine: MachineInfo, plan: str | os.PathLike) -> None:
    """Raise :class:`EngineCacheError` when an engine's key names another TensorRT version or GPU."""
    diffs = key_mismatches(recorded, machine.to_json(), MACHINE_FIELDS)
    if diffs:
        raise EngineCacheError(
            f"engine {plan} was built for another machine ({'; '.join(diffs)}); TensorRT engines only run with "
            "the TensorRT version and GPU model they were built with. Rebuild it here with "
            f"`python -m export.trt --bundle {Path(plan).parent} --{recorded.get('precision') or 'fp32'}`"
        )
