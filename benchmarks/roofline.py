"""``python -m benchmarks.roofline``: each network call's FLOPs over its measured time, as a fraction of peak.

The counting and the peak are :mod:`benchmarks.flops`; the calls are measured by
:func:`benchmarks.backends.measure_backends`.

``python -m benchmarks.roofline --model tiny`` prints the table for both backends.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.backends import measure_backends
from benchmarks.flops import format_roofline
from benchmarks.timing import Stats
from benchmarks.workload import add_clip_args
from contract.atomic import write_json_atomic
from contract.cli import run_cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.roofline",
        description="FLOPs of each network call (torch FlopCounterMode) over its measured time, as a fraction "
                    "of this machine's fp32 GEMM throughput measured in the same run.",
    )
    p.add_argument("--model", default="tiny", help="tiny, svd-random or a diffusers SVD directory (default tiny)")
    p.add_argument("--bundle", help="exported bundle for the onnxruntime backend (default: export/cached)")
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"], choices=["onnxruntime", "torch"])
    add_clip_args(p)
    p.add_argument("--gemm-size", type=int, default=1024)
    p.add_argument("--out", help="write roofline.json here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = measure_backends(
        args.model, bundle_dir=args.bundle, backends=args.backends, frames=args.frames, height=args.height,
        width=args.width, repeats=args.repeats, warmup=args.warmup, threads=args.threads, roofline=True,
        gemm_size=args.gemm_size,
    )
    print(format_roofline(result["roofline"]["rows"], Stats.from_json(result["roofline"]["gemm"])))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out) / "roofline.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
