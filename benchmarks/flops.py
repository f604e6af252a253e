"""Roofline: FLOPs of each network call against this machine's own matrix-multiply throughput.

``fraction of peak = (FLOPs of one call / seconds of one call) / GEMM FLOP/s``, where

- FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the PyTorch network
  (the module the ONNX graph was traced from) at the call's exact shapes. It counts the
  matrix-multiply-like operators (``mm``, ``bmm``, ``addmm``, convolutions, scaled-dot-product
  attention) as 2 FLOPs per multiply-add and ignores element-wise work, which is how a roofline
  over the GEMM peak is meant;
- the peak is the median throughput of a square fp32 ``torch.mm`` measured in the same process,
  at the same thread count, interleaved with the network calls (one GEMM sample per round), so
  that on a shared machine the peak and the calls see the same load.

The counting runs under :class:`torch._subclasses.fake_tensor.FakeTensorMode` when it can: no
arithmetic is done, so counting the full-size UNet costs seconds instead of a real forward pass.

``python -m benchmarks.roofline --model tiny`` measures and prints the table for both backends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.errors import BenchmarkError
from benchmarks.timing import Stats, interleave, summarize, timed
from contract.specs import build_specs
from networks.wrappers import build_network

log = logging.getLogger(__name__)


def count_flops(module: torch.nn.Module, args: Sequence[torch.Tensor], fake: bool = True) -> int:
    """FLOPs of ``module(*args)`` (2 per multiply-add of GEMM-like operators).

    With ``fake=True`` the call runs on fake tensors (shapes only); if the module cannot run
    that way the count falls back to a real forward pass, which gives the same number.
    """
    if fake:
        try:
            return _count_fake(module, args)
        except Exception as exc:  # an operator without a fake kernel: count for real
            log.debug("fake-tensor FLOP count failed (%s); counting with a real forward pass", exc)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args)
    return int(counter.get_total_flops())


def _count_fake(module: torch.nn.Module, args: Sequence[torch.Tensor]) -> int:
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_args = [mode.from_tensor(a) for a in args]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), mode, counter:
        module(*fake_args)
    return int(counter.get_total_flops())


def network_flops(model, calls: Mapping[str, tuple[str, dict]], fake: bool = True) -> dict[str, int]:
    """FLOPs per call: ``calls`` maps a call name to ``(network name, inputs)`` (numpy or torch)."""
    specs = build_specs(model.config)
    out = {}
    for call, (network, inputs) in calls.items():
        module = build_network(network, model)
        tensors = [torch.as_tensor(inputs[n]) for n in specs[network].input_names]
        out[call] = count_flops(module, tensors, fake=fake)
    return out


def gemm_sampler(size: int = 1024) -> tuple[Callable[[], float], float]:
    """``(sampler, flops)``: a timed fp32 ``[size, size] @ [size, size]`` and its ``2 * size^3`` FLOPs.

    Put the sampler into the same :func:`benchmarks.timing.interleave` as the networks, so that
    the peak is measured under the same load as the calls it is compared with.
    """
    if size < 16:
        raise BenchmarkError(f"GEMM size must be >= 16, got {size}")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    out = torch.empty(size, size)
    return timed(lambda: torch.mm(a, b, out=out)), 2.0 * size**3


def gflops_stats(seconds: Sequence[float], flops: float) -> Stats:
    """GFLOP/s summary of repeated timings of a ``flops``-FLOP operation."""
    return summarize([flops / s / 1e9 for s in seconds])


def gemm_gflops(size: int = 1024, repeats: int = 7, warmup: int = 2) -> Stats:
    """GFLOP/s of an fp32 ``[size, size] @ [size, size]`` on the CPU at torch's current threads."""
    sample, flops = gemm_sampler(size)
    return gflops_stats(interleave({"mm": sample}, repeats, warmup)["mm"], flops)


def fraction_of_peak(flops: int, seconds: float, peak_gflops: float) -> float:
    """Achieved GFLOP/s over the GEMM peak: ``flops / seconds / 1e9 / peak``."""
    if seconds <= 0 or peak_gflops <= 0:
        raise BenchmarkError("fraction_of_peak needs positive seconds and peak")
    return flops / seconds / 1e9 / peak_gflops


def roofline_rows(flops: Mapping[str, int], seconds: Mapping[str, float], peak_gflops: float) -> dict[str, dict]:
    """Per call: GFLOP, seconds, achieved GFLOP/s and fraction of the GEMM peak."""
    rows = {}
    for call, f in flops.items():
        if call not in seconds:
            continue
        s = seconds[call]
        rows[call] = {"gflop": f / 1e9, "seconds": s, "gflops": f / s / 1e9, "fraction": fraction_of_peak(f, s, peak_gflops)}
    return rows


def format_roofline(rows_by_backend: Mapping[str, Mapping[str, dict]], peak: Stats) -> str:
    lines = [f"GEMM peak (fp32 torch.mm, median of {peak.n}): {peak.median:.1f} GFLOP/s "
             f"[{peak.q1:.1f}-{peak.q3:.1f}]",
             f"{'backend':<12} {'call':<14} {'GFLOP':>9} {'seconds':>9} {'GFLOP/s':>9} {'of peak':>8}"]
    for backend, rows in rows_by_backend.items():
        for call, r in rows.items():
            lines.append(f"{backend:<12} {call:<14} {r['gflop']:>9.2f} {r['seconds']:>9.4f} {r['gflops']:>9.1f} "
                         f"{100 * r['fraction']:>7.1f}%")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
