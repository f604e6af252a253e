"""Timing helpers: warm-up, interleaved repeats, medians and spread (after nanoGPT's ``bench.py``).

Everything here runs on the CPU and uses :func:`time.perf_counter`. Two habits make numbers from
a noisy, shared machine usable:

- configurations are interleaved (``A B C A B C ...``) rather than run back to back, so that a
  burst of load from another process hits every configuration alike;
- the summary is the median with its quartiles and extremes, never a single run or the mean.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks.errors import BenchmarkError


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (seconds, or any unit the samples are in)."""

    n: int
    median: float
    q1: float  # first quartile (the median of the lower half for n >= 2)
    q3: float  # third quartile
    min: float
    max: float

    @property
    def iqr(self) -> float:
        """Inter-quartile range ``q3 - q1``."""
        return self.q3 - self.q1

    @property
    def spread(self) -> float:
        """Relative spread ``(q3 - q1) / median`` (0 for a single sample or a zero median)."""
        return self.iqr / self.median if self.median else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "spread": self.spread}

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> "Stats":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def summarize(samples: Sequence[float]) -> Stats:
    """Median, quartiles (Python's 'inclusive' method, i.e. linear interpolation) and extremes.

    >>> summarize([3.0, 1.0, 2.0]).median
    2.0
    """
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("summarize() needs at least one sample")
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Stats(n=len(values), median=statistics.median(values), q1=q1, q3=q3, min=values[0], max=values[-1])


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """Wrap ``fn`` so that calling the wrapper returns ``fn``'s wall time in seconds."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the wall times."""
    return interleave({"fn": timed(fn)}, repeats, warmup)["fn"]


def interleave(
    samplers: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[Any]]:
    """Run every sampler once per round, in order (``A B C A B C ...``), and collect their results.

    A sampler returns its own measurement (a time from :func:`timed`, or a dict of per-stage
    timings from a pipeline). The ``warmup`` rounds (also interleaved) are discarded: they pay
    for lazy session creation, allocator growth and first-call dispatch caches.

    Returns:
        ``{name: [result of round 1, ..., result of round rounds]}``.
    """
    if rounds < 1:
        raise BenchmarkError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise BenchmarkError(f"warmup must be >= 0, got {warmup}")
    results: dict[str, list[Any]] = {name: [] for name in samplers}
    for i in range(warmup + rounds):
        for name, sample in samplers.items():
            value = sample()
            if i >= warmup:
                results[name].append(value)
    return results


def summarize_dicts(samples: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None) -> dict[str, Stats]:
    """Per-key :func:`summarize` over a list of dicts (e.g. a pipeline's per-stage timings)."""
    keys = keys or [k for k, v in samples[0].items() if isinstance(v, float)]
    return {k: summarize([s[k] for s in samples]) for k in keys}


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads (``None``: leave them) and return the number in use.

    Timings are only comparable at a fixed thread count; ONNX Runtime engines get the same
    number through their session options.
    """
    if threads is not None:
        if threads < 1:
            raise BenchmarkError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()
