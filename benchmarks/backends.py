"""ONNX Runtime vs eager PyTorch, per network call, same shapes, same process.

Each call of one clip (``image_encoder``, ``vae_encoder``, ``unet_b2`` = one guided SVD step,
``unet_b1`` = one SF-V step, ``vae_decoder``) runs on both backends with identical seeded
inputs; the calls of both backends are interleaved round by round, so load from other
processes hits both alike. ``ratio = torch median / onnxruntime median`` (> 1: ONNX Runtime is
faster). The outputs are compared once (``max_abs_diff``) so that a fast but wrong graph shows.

``python -m benchmarks.backends --model tiny``
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.flops import format_roofline, gemm_sampler, gflops_stats, network_flops, roofline_rows
from benchmarks.machine import describe, machine_info, usable_cores
from benchmarks.timing import Stats, interleave, set_threads, summarize, timed
from benchmarks.workload import (
    BACKENDS,
    CALLS,
    add_clip_args,
    build_calls,
    describe_dims,
    ensure_bundle,
    model_info,
    resolve_shape,
    shapes_info,
)
from contract.atomic import write_json_atomic
from contract.cli import run_cli
from engines.factory import create_engines, torch_engines
from networks.models import SVDModel, load_model

log = logging.getLogger(__name__)


def measure_backends(
    model="tiny",
    *,
    bundle_dir=None,
    backends: Sequence[str] = BACKENDS,
    calls: Sequence[str] = CALLS,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    roofline: bool = False,
    gemm_size: int = 1024,
    engines_by_backend: dict | None = None,
) -> dict:
    """Time every call on every backend (interleaved) and return the result dict.

    Args:
        model: ``tiny``, ``svd-random``, a directory, or a loaded ``SVDModel`` (then pass ``bundle_dir``).
        engines_by_backend: ready engines ``{backend: {network: Engine}}`` (skips loading them).
        roofline: also count each call's FLOPs and measure the GEMM peak (see :mod:`benchmarks.flops`).
    """
    for b in backends:
        if b not in BACKENDS:
            raise BenchmarkError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    threads = set_threads(threads or usable_cores())
    machine = machine_info(threads)  # before running: the load average should not include this run
    loaded = model if isinstance(model, SVDModel) else load_model(model)
    source = loaded.source
    frames, height, width = resolve_shape(loaded.config, frames, height, width)
    engines_by_backend = dict(engines_by_backend or {})
    for b in backends:
        if b not in engines_by_backend:
            bundle = ensure_bundle(model if not isinstance(model, SVDModel) else loaded, bundle_dir) if b == "onnxruntime" else None
            engines_by_backend[b] = torch_engines(loaded)[0] if b == "torch" else create_engines(bundle, b, threads=threads)
    todo = build_calls(loaded.config, frames, height, width, calls)

    result = {
        "benchmark": "backends",
        "machine": machine,
        "model": model_info(loaded, source=source),
        "shapes": shapes_info(loaded.config, frames, height, width),
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "backends": list(backends)},
        "calls": {},
    }
    samplers, outputs = {}, {}
    if roofline:  # the GEMM peak joins the same interleaved rounds as the networks

        samplers["gemm"], gemm_flops = gemm_sampler(gemm_size)
    for call, (network, inputs) in todo.items():
        for b in backends:
            engine = engines_by_backend[b][network]
            outputs[(call, b)] = engine.run(inputs)  # first call: activation + a parity sample
            samplers[f"{b}/{call}"] = timed(lambda e=engine, i=inputs: e.run(i))
    times = interleave(samplers, repeats, warmup)

    for call, (network, _) in todo.items():
        stats = {b: summarize(times[f"{b}/{call}"]) for b in backends}
        entry = {"network": network, "dims": result["shapes"]["calls"][call],
                 "backends": {b: s.to_json() for b, s in stats.items()}}
        if "torch" in stats and "onnxruntime" in stats:
            entry["ratio"] = stats["torch"].median / stats["onnxruntime"].median
            a = next(iter(outputs[(call, "torch")].values()))
            c = next(iter(outputs[(call, "onnxruntime")].values()))
            entry["max_abs_diff"] = float(np.abs(a - c).max())
        result["calls"][call] = entry

    if roofline:
        peak = gflops_stats(times["gemm"], gemm_flops)
        flops = network_flops(loaded, todo)
        result["roofline"] = {
            "gemm": {**peak.to_json(), "size": gemm_size},
            "flops": flops,
            "rows": {b: roofline_rows(flops, {c: result["calls"][c]["backends"][b]["median"] for c in todo}, peak.median)
                     for b in backends},
        }
    return result


def format_backends(result: dict) -> str:
    """A table: per call, each backend's median [quartiles], the ratio and the output difference."""
    backends = result["settings"]["backends"]
    lines = [
        f"backends, model {result['model']['source']}: {result['shapes']['frames']} frames at "
        f"{result['shapes']['height']}x{result['shapes']['width']}",
        f"machine: {describe(result['machine'])}; {result['settings']['repeats']} repeats after "
        f"{result['settings']['warmup']} warm-up, interleaved",
        f"{'call':<14} {'shape':<28} " + " ".join(f"{b + ' s [q1-q3]':>26}" for b in backends)
        + f" {'torch/ORT':>10} {'max|diff|':>10}",
    ]
    for call, e in result["calls"].items():
        cells = []
        for b in backends:
            s = e["backends"][b]
            cells.append(f"{s['median']:.4f} [{s['q1']:.4f}-{s['q3']:.4f}]".rjust(26))
        ratio = f"{e['ratio']:.2f}x" if "ratio" in e else "-"
        diff = f"{e['max_abs_diff']:.1e}" if "max_abs_diff" in e else "-"
        lines.append(f"{call:<14} {describe_dims(e['dims']):<28} " + " ".join(cells) + f" {ratio:>10} {diff:>10}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.backends",
        description="ONNX Runtime vs eager PyTorch for each network call of one clip (same shapes, same process, "
                    "interleaved); prints torch/ORT ratios (> 1: ONNX Runtime is faster).",
    )
    p.add_argument("--model", default="tiny", help="tiny, svd-random or a diffusers SVD directory (default tiny)")
    p.add_argument("--bundle", help="exported bundle directory (default: export once and cache)")
    p.add_argument("--calls", nargs="+", default=list(CALLS), choices=list(CALLS))
    add_clip_args(p)
    p.add_argument("--roofline", action="store_true", help="also count FLOPs and report the fraction of GEMM peak")
    p.add_argument("--out", help="write backends.json here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = measure_backends(
        args.model, bundle_dir=args.bundle, calls=args.calls, frames=args.frames, height=args.height,
        width=args.width, repeats=args.repeats, warmup=args.warmup, threads=args.threads, roofline=args.roofline,
    )
    print(format_backends(result))
    if args.roofline:
        print()
        print(format_roofline(result["roofline"]["rows"], Stats.from_json(result["roofline"]["gemm"])))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out) / "backends.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
