"""Same-run ratios and the baseline of the pytest gate (``python -m pytest benchmarks/``).

A shared CI machine cannot gate on absolute seconds, so the pytest gate (``benchmarks/test_gate.py``)
checks two kinds of quantity that such noise leaves alone:

- same-run ratios (this module): eager PyTorch over ONNX Runtime for each network call, and an
  SVD multi-step clip over an SF-V one-step clip (both on ONNX Runtime); the two sides of a ratio
  are interleaved round by round, so a burst of load slows both, and at 1 thread both are timed
  on the process CPU clock (:func:`ratio_clock`), which leaves preemption by other jobs out. Checked against
  ``benchmarks/baseline.json`` (a ratio fails below ``baseline * (1 - tolerance)``);
- deterministic proxies (:mod:`benchmarks.proxies`, ``benchmarks/proxies.json``).

Absolute timings are still recorded by pytest-benchmark, for ``--benchmark-compare-fail`` on
machines that are stable. For code changes, ``python -m benchmarks.gate --base REF`` times both
revisions in one run (:mod:`benchmarks.gate`).

Environment (or the matching pytest options, see ``benchmarks/conftest.py``):

- ``SFV_BENCH_QUICK=1``: CI mode (fewer frames and rounds, SVD 4 steps vs SF-V 1);
- ``SFV_BENCH_BUNDLE=DIR``: the exported tiny bundle to time (without it the gate exports one,
  explicitly, and logs where);
- ``SFV_BENCH_THREADS=N``: intra-op threads (default 1: on a shared 2-core machine two threads
  per process oversubscribe the CPU and make PyTorch's timings erratic);
- ``SFV_BENCH_UPDATE_BASELINE=1``: record the measured ratios into the baseline instead of checking.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import BenchmarkError
from contract.atomic import write_json_atomic

BASELINE = Path(__file__).with_name("baseline.json")
UPDATE_COMMAND = "SFV_BENCH_UPDATE_BASELINE=1 python -m pytest benchmarks/ -q -k ratio   (and again with SFV_BENCH_QUICK=1)"
DEFAULT_TOLERANCE = {"ratio": 0.5}


@dataclass(frozen=True)
class GateSettings:
    """What one gate run measures."""

    mode: str  # "quick" (CI) or "full"
    frames: int  # frames of the clip; height and width are the model's defaults (its manifest)
    rounds: int  # interleaved timed rounds per ratio
    warmup: int
    multi_steps: int  # SVD steps compared with SF-V's one
    threads: int

    @classmethod
    def from_env(cls, quick: bool | None = None, threads: int | None = None) -> "GateSettings":
        quick = _flag("SFV_BENCH_QUICK") if quick is None else quick
        threads = threads or int(os.environ.get("SFV_BENCH_THREADS", "1"))
        if quick:
            return cls("quick", frames=4, rounds=5, warmup=1, multi_steps=4, threads=threads)
        return cls("full", frames=14, rounds=9, warmup=2, multi_steps=25, threads=threads)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def update_requested() -> bool:
    return _flag("SFV_BENCH_UPDATE_BASELINE")


# --------------------------------------------------------------------------- ratios


def calls_per_sample(fn: Callable[[], object], min_sample_s: float, limit: int = 64) -> int:
    """How many back-to-back calls make one sample last ``min_sample_s`` (a power of two, <= limit).

    Millisecond calls are dominated by scheduler jitter on a shared machine; averaging a few
    calls per sample keeps each sample long enough to be stable.
    """
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    n = 1
    while n * once < min_sample_s and n < limit:
        n *= 2
    return n


def ratio_clock(threads: int) -> Callable[[], float]:
    """The clock a same-run ratio is timed by: this process's CPU time at 1 thread, else wall time.

    At one thread a call's process CPU time is its own work: time in which another process holds
    the core is left out (measured on a 2-core Intel Xeon at load 2-4, quick mode: torch/ORT for
    the ~2 ms CLIP call scattered 1.10-2.70 over four wall-clock runs, 1.66-2.07 over four CPU-time
    runs). With more threads a thread pool's spinning would count as work, so wall time is used.
    """
    return time.process_time if threads == 1 else time.perf_counter


def paired_ratio(
    numerator: Callable[[], object], denominator: Callable[[], object], rounds: int, warmup: int,
    runner: Callable | None = None, min_sample_s: float = 0.05, clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, list[float], list[float], tuple[int, int]]:
    """``median(numerator seconds per call) / median(denominator seconds per call)``, interleaved.

    Each round runs the numerator then the denominator, each ``n`` times back to back (``n``
    from :func:`calls_per_sample`), timed by ``clock`` (see :func:`ratio_clock`).
    ``runner(target, setup, rounds, warmup)`` drives the rounds (pytest-benchmark's ``pedantic`` in the gate, so that the denominator's absolute times are
    also saved for ``--benchmark-compare``); the times used here are taken by this function.

    Returns:
        ``(ratio, numerator seconds per call, denominator seconds per call, (n_num, n_den))``.
    """
    # optional: torch (the export extra)
    from benchmarks.timing import summarize

    n_num, n_den = calls_per_sample(numerator, min_sample_s), calls_per_sample(denominator, min_sample_s)
    num, den = [], []

    def setup():
        start = clock()
        for _ in range(n_num):
            numerator()
        num.append((clock() - start) / n_num)

    def target():
        start = clock()
        for _ in range(n_den):
            denominator()
        den.append((clock() - start) / n_den)

    if runner is None:
        for _ in range(warmup + rounds):
            setup()
            target()
    else:
        runner(target, setup, rounds, warmup)
    # Warm-up rounds are the first ones; keep the last `rounds` of each side.
    num, den = num[-rounds:], den[-rounds:]
    return summarize(num).median / summarize(den).median, num, den, (n_num, n_den)


# --------------------------------------------------------------------------- baseline file


def load_baseline(path: str | os.PathLike = BASELINE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no gate baseline at {path}; create it with `{UPDATE_COMMAND}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON ({exc}); regenerate it with `{UPDATE_COMMAND}`") from None
    data.setdefault("tolerance", dict(DEFAULT_TOLERANCE))
    data.setdefault("ratios", {})
    return data


def ratio_floor(baseline: dict, mode: str, key: str) -> float | None:
    """The lowest passing value of ratio ``key``: ``baseline * (1 - tolerance)``; None if not recorded."""
    value = baseline.get("ratios", {}).get(mode, {}).get(key)
    if value is None:
        return None
    return value * (1 - baseline["tolerance"]["ratio"])


def save_baseline(recorded: dict, mode: str, machine: dict, path: str | os.PathLike = BASELINE) -> dict:
    """Merge ``recorded`` (``{"ratios": {...}}`` of one run in ``mode``) into the file."""
    path = Path(path)
    data = load_baseline(path) if path.is_file() else {"tolerance": dict(DEFAULT_TOLERANCE), "ratios": {}}
    data["format"] = 1
    data["update_command"] = UPDATE_COMMAND
    if recorded.get("ratios"):
        data["ratios"][mode] = {k: round(v, 3) for k, v in sorted(recorded["ratios"].items())}
    data.setdefault("recorded", {})[mode] = {k: machine.get(k) for k in ("date", "cpu", "cores", "threads", "load_average", "versions")}
    write_json_atomic(path, data)
    return data
