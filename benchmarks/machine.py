"""What a result was measured on: CPU, vector extensions, cores, threads, load, library versions, date."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import torch

from contract.environment import cpu_model, library_versions, vector_extensions

_VERSIONED = ("torch", "onnxruntime", "onnx", "diffusers", "transformers", "numpy", "pytest-benchmark")


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes; above the core count = contended)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask; ``os.cpu_count()`` where unsupported)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(threads: int | None = None) -> dict:
    """A JSON-ready description of this machine and run.

    ``load_average`` (1, 5, 15 min) is recorded because timings on a shared machine depend on
    it: a load above the core count means other processes competed for the CPU.
    """
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "vector_extensions": vector_extensions(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": library_versions(_VERSIONED),
    }


def describe(info: dict) -> str:
    """One line for a table header: ``CPU (extensions), N cores, T threads, load L``."""
    load = info.get("load_average")
    load_text = f", load {load[0]:.1f}" if load else ""
    gpu = f", GPU {info['cuda']}" if info.get("cuda") else ""
    threads = f"{info['threads']} thread" + ("s" if info["threads"] != 1 else "")
    ext = info.get("vector_extensions")
    ext_text = f" ({', '.join(ext) if ext else 'no AVX2'})" if ext is not None else ""
    return f"{info['cpu']}{ext_text}, {info['cores']} cores, {threads}{load_text}{gpu}"


def contention_warning(info: dict) -> str | None:
    """A warning when other processes load the CPU (``info`` taken before the run): timings at more than one thread then scatter
    (OpenMP threads wait on each other whenever another process holds a core)."""
    load = info.get("load_average")
    if not load or load[0] < 0.5 * info["cores"]:
        return None
    several = info["threads"] > 1  # --threads 1 is advice only where more than one thread ran
    return (f"load average {load[0]:.1f} on {info['cores']} cores: other processes compete for the CPU, so absolute "
            f"times will scatter{' (especially at ' + str(info['threads']) + ' threads)' if several else ''}; "
            f"read the same-run ratios{', pass --threads 1,' if several else ''} or rerun on an idle machine")
