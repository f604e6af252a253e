"""What this machine has: installed library versions, the NVIDIA GPU stack, and a quiet import
of transformers' image processors. One place for each check so every command says the same.

Nothing here imports torch or TensorRT at module import: the runtime imports this module too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import platform
import re
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from contract.errors import BackendUnavailableError

log = logging.getLogger(__name__)

# The TensorRT range the builder is written for: strongly typed networks exist from 10.12; 11.x
# removed the weak-typing API that older code used. The `gpu` extra pins the same range.
TENSORRT_REQUIREMENT = "tensorrt>=10.12,<12"
INSTALL_HINT = (
    "on a machine with an NVIDIA GPU and driver, run `pip install '.[gpu]'` "
    f"({TENSORRT_REQUIREMENT}, onnxruntime-gpu, cuda-python) with a CUDA build of torch"
)


# Strongly typed networks from ONNX: the flag exists since 10.x, its ONNX path is complete since
# 10.12 (the release that deprecated weak typing); 11.x is strongly typed only.
MIN_TENSORRT = (10, 12)
NEXT_UNTESTED = (12, 0)


def tensorrt_version_tuple(version: str) -> tuple[int, int]:
    """``"10.12.0.36"`` -> ``(10, 12)``."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if not match:
        raise BackendUnavailableError(f"cannot read the TensorRT version {version!r}; install {TENSORRT_REQUIREMENT!r}")
    return int(match.group(1)), int(match.group(2))


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT that cannot build strongly typed networks from ONNX (older than 10.12)."""
    got = tensorrt_version_tuple(version)
    if got < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: engines are built as strongly typed networks (precision from the "
            f"ONNX graph), which needs TensorRT >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (11.x supported); "
            f"upgrade with `pip install '{TENSORRT_REQUIREMENT}'`"
        )
    if got >= NEXT_UNTESTED:
        log.warning("TensorRT %s is newer than the range this toolkit is written for (%s)", version, TENSORRT_REQUIREMENT)


# Integer dot-product instructions: with one of them ONNX Runtime's u8s8 GEMM is exact and fast.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` names them (Linux; empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# /proc/cpuinfo flags that decide which kernels the backends can use (oneDNN, MLAS).
VECTOR_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


def vector_extensions() -> list[str]:
    """The CPU's vector extensions among :data:`VECTOR_FLAGS` (Linux; empty where unknown)."""
    flags = cpu_flags()
    return [name for flag, name in VECTOR_FLAGS.items() if flag in flags]


def x86_without_vnni() -> bool:
    """An x86-64 CPU known to lack VNNI (AVX2-only, or AVX-512 without VNNI): ONNX Runtime's int8
    GEMM there needs its exact u8u8 kernels, which cost speed (docs/precision.md)."""
    flags = cpu_flags()
    return platform.machine().lower() in ("x86_64", "amd64") and bool(flags) and not (flags & VNNI_FLAGS)


def library_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{name: installed version}`` of distributions ``names`` (``None`` when not installed);
    ``onnx_graphsurgeon`` and ``onnx-graphsurgeon`` name the same distribution."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def exporter_fingerprint() -> str:
    """12 hex digits of sha256 over the exporter's own source (``export/*.py``) and the versions of
    the libraries that trace and write the graphs: a cached export made by other exporter code
    (e.g. an older ``clip_preprocess`` graph) must not be reused as if it were this one's."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(repr(sorted(library_versions(("torch", "onnx", "diffusers", "transformers")).items())).encode())
    return digest.hexdigest()[:12]


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA kernel driver or its ``nvidia-smi`` is installed (Linux, Windows)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def missing_gpu() -> list[str]:
    """What this machine lacks for PyTorch to use a CUDA GPU (empty when it can)."""
    # optional: torch (the export extra)
    import torch

    if torch.cuda.is_available():
        return []
    # Which part of the GPU stack is absent (only for the message; PyTorch decides).
    missing = []
    has_driver = nvidia_driver_present()
    if not has_driver:
        missing.append("an NVIDIA GPU and driver (no nvidia-smi, no /proc/driver/nvidia)")
    if torch.version.cuda is None:
        missing.append(f"a CUDA build of PyTorch (torch {torch.__version__} is a CPU-only build)")
    elif has_driver:
        missing.append(
            "a GPU visible to PyTorch (torch.cuda.is_available() is False; check `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
        )
    return missing


def missing_requirements() -> list[str]:
    """What this machine lacks to build or run TensorRT engines (empty when nothing)."""
    missing = []
    try:
        importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        missing.append(f"the tensorrt Python module ({type(exc).__name__}: {exc})")
    return missing + missing_gpu()


def require_gpu_and_tensorrt(what: str = "building TensorRT engines") -> None:
    """Raise :class:`BackendUnavailableError` naming everything that is missing, and how to get it."""
    missing = missing_requirements()
    if missing:
        raise BackendUnavailableError(
            f"{what} needs TensorRT and an NVIDIA GPU; missing here: " + "; ".join(missing) + f". Fix: {INSTALL_HINT}. "
            "Without a GPU, use the onnxruntime or torch backend instead."
        )


def require_gpu(what: str) -> None:
    """Raise :class:`BackendUnavailableError` when PyTorch sees no CUDA GPU, naming what is missing."""
    missing = missing_gpu()
    if missing:
        raise BackendUnavailableError(
            f"{what} needs an NVIDIA GPU; missing here: " + "; ".join(missing) + f". Fix: {INSTALL_HINT}. "
            "Without a GPU, run on the CPU instead."
        )


class _TorchvisionFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


@contextlib.contextmanager
def quiet_torchvision_fallback():
    """Import transformers' image processors (or diffusers' SVD pipeline module, which imports
    them) without the warning that ``CLIPImageProcessor`` falls back to its PIL twin when
    torchvision is absent: the toolkit reads only the processor's mean and std, so every command
    would print a warning nobody needs to act on. The filter sits on transformers' import logger
    for the duration of the block only."""
    logger = logging.getLogger("transformers.utils.import_utils")
    quiet = _TorchvisionFallbackFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
