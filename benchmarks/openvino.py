"""ONNX Runtime fp32 vs OpenVINO f32 vs OpenVINO bf16, per network call and on SF-V frames.

For each call of one clip (``image_encoder``, ``vae_encoder``, ``unet_b2`` = one guided SVD step,
``unet_b1`` = one SF-V step, ``vae_decoder``) the three configurations load the same bundle graph
and run identical seeded inputs, interleaved round by round (``A B C A B C ...``) so that load
from other processes hits all alike. Networks are measured one after another and released in
between, so at most one network is resident three times. The full-size UNet three times does not
fit 24 GiB (killed at 25.9 GB): run it in pairs, ``--configs ort-fp32 ov-f32`` and then
``--configs ort-fp32 ov-bf16``, each alternated against ONNX Runtime in its own run. Per call the table gives each configuration's median, its speed relative to ONNX Runtime
(``ORT median / median``; > 1 is faster), the start time (session creation / compilation) and
the relative error of its output against ONNX Runtime's (``||y - y_ort|| / ||y_ort||``).

``--frames-check`` then generates SF-V one-step clips (steps 1, guidance 1) with each
configuration from the same seed, hence the same noise, and reports the frames' PSNR against
ONNX Runtime fp32's (the pipelines run one after another, each released before the next).

    python -m export.onnx --model svd-random --out bundles/svd-random   # once: the full-size bundle
    python -m benchmarks.openvino --bundle bundles/svd-random --frames 14 --height 128 --width 128 --threads 2 \\
        --out runs/openvino
    python -m benchmarks.openvino --bundle bundles/svd-random --calls none --frames-check
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.machine import contention_warning, describe, machine_info, usable_cores
from benchmarks.report import write_json_and_markdown
from benchmarks.timing import interleave, summarize, timed
from benchmarks.workload import CALLS, build_calls, call_dims, describe_dims, synthetic_image
from contract import environment
from contract.bundle import Bundle
from contract.cli import run_cli
from contract.specs import NETWORKS
from engines.factory import create_engines
from engines.openvino_engine import import_openvino
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)

# name -> (backend, OpenVINO inference precision); the first is the reference.
CONFIGS = {"ort-fp32": ("onnxruntime", None), "ov-f32": ("openvino", "f32"), "ov-bf16": ("openvino", "bf16")}
REFERENCE = "ort-fp32"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """Which of the vector extensions that decide the precisions' speed this CPU has (``/proc/cpuinfo``)."""
    flags = environment.cpu_flags()
    return {flag: flag in flags for flag in CPU_FLAGS}


def relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    """``||y - ref|| / ||ref||`` over the whole tensor."""
    y, reference = np.asarray(y, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(y - reference) / max(np.linalg.norm(reference), 1e-30))


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of uint8 frames against reference frames (``inf`` when identical)."""
    mse = float(np.mean((np.asarray(frames, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _precision(ov_precision: str) -> str:
    """The runtime's precision option for OpenVINO's f32 / bf16 arithmetic on the fp32 graphs."""
    return "bf16" if ov_precision == "bf16" else "fp32"


def make_engine(bundle: Bundle, network: str, config: str, threads: int | None, cache_dir=None):
    """One engine of ``network`` for a configuration of :data:`CONFIGS`."""
    backend, ov_precision = CONFIGS[config]
    options = {"precision": _precision(ov_precision), "ov_cache_dir": cache_dir} if backend == "openvino" else {}
    return create_engines(bundle, backend, networks=[network], threads=threads, verify=False, **options)[network]


def measure_calls(
    bundle: Bundle,
    *,
    configs: Sequence[str] = tuple(CONFIGS),
    calls: Sequence[str] = CALLS,
    frames: int | None = None,  # None: the bundle's model's
    height: int = 128,
    width: int = 128,
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
) -> dict:
    """Time every call under every configuration (interleaved per call); errors against the reference.

    The engines of one network serve all its calls (``unet_b2`` and ``unet_b1``) and are
    released before the next network loads.
    """
    if REFERENCE not in configs:
        raise BenchmarkError(f"the configurations must include the reference {REFERENCE}")
    frames = frames or bundle.config.num_frames
    todo = build_calls(bundle.config, frames, height, width, calls)
    dims = call_dims(bundle.config, frames, height, width)
    result = {}
    for network in dict.fromkeys(network for network, _ in todo.values()):
        engines, starts = {}, {}
        for config in configs:
            engines[config] = make_engine(bundle, network, config, threads)
            start = time.perf_counter()
            engines[config].activate()
            starts[config] = time.perf_counter() - start
        for call in [c for c, (n, _) in todo.items() if n == network]:
            inputs = {name: np.asarray(value) for name, value in todo[call][1].items()}
            # First call: the error sample (and any lazy set-up, outside the timed rounds).
            outputs = {c: next(iter(engines[c].run(inputs).values())) for c in configs}
            times = interleave({c: timed(lambda e=engines[c]: e.run(inputs)) for c in configs}, repeats, warmup)
            stats = {c: summarize(times[c]) for c in configs}
            ref = stats[REFERENCE].median
            result[call] = {
                "network": network,
                "dims": dims[call],
                "configs": {
                    c: {
                        **stats[c].to_json(),
                        "start_s": starts[c],
                        "speed_vs_ort": ref / stats[c].median,
                        "relative_error": relative_error(outputs[c], outputs[REFERENCE]),
                        "max_abs_diff": float(np.max(np.abs(outputs[c] - outputs[REFERENCE]))),
                    }
                    for c in configs
                },
            }
            log.info("%s", format_call(call, result[call]))
        for engine in engines.values():
            engine.deactivate()
        del engines
        gc.collect()
    return result


def measure_starts(bundle: Bundle, cache_dir, *, networks: Sequence[str], ov_precision: str = "f32",
                   threads: int | None = None) -> dict:
    """OpenVINO start (compile) time per network with an empty compiled-model cache, then from the cache."""
    out = {}
    for network in networks:
        seconds = []
        for _ in range(2):
            engine = create_engines(bundle, "openvino", networks=[network], threads=threads, verify=False,
                                    precision=_precision(ov_precision), ov_cache_dir=cache_dir)[network]
            start = time.perf_counter()
            engine.activate()
            seconds.append(time.perf_counter() - start)
            engine.deactivate()
            del engine
            gc.collect()
        out[network] = {"first_s": seconds[0], "cached_s": seconds[1]}
        log.info("%s: OpenVINO %s start %.1f s, from the cache %.1f s", network, ov_precision, *seconds)
    return out


def measure_frames(
    bundle_dir, *, configs: Sequence[str] = tuple(CONFIGS), frames: int | None = None, height: int = 128, width: int = 128,
    threads: int | None = None, seed: int = 0,
) -> dict:
    """SF-V one-step clips (same seed, hence the same noise) per configuration; PSNR against the reference's frames."""
    image = synthetic_image(height, width)
    clips, seconds = {}, {}
    for config in configs:
        backend, ov_precision = CONFIGS[config]
        options = {"precision": _precision(ov_precision)} if backend == "openvino" else {}
        with VideoPipeline.from_bundle(bundle_dir, backend=backend, threads=threads, **options) as pipe:
            start = time.perf_counter()
            clips[config] = pipe(image, num_frames=frames, height=height, width=width, steps=1, min_guidance=1.0,
                                 max_guidance=1.0, seed=seed, generator="splitmix", progress=False).frames
            seconds[config] = time.perf_counter() - start
        gc.collect()
    ref = clips[REFERENCE]
    return {c: {"psnr_db": psnr(clips[c], ref), "max_level_diff": int(np.max(np.abs(clips[c].astype(int) - ref))),
                "seconds": seconds[c]} for c in configs}


def format_call(call: str, entry: Mapping) -> str:
    cells = []
    for c, s in entry["configs"].items():
        cell = f"{c} {s['median']:.3f}s"
        if c != REFERENCE:
            cell += f" ({s['speed_vs_ort']:.2f}x, err {s['relative_error']:.1e})"
        cells.append(cell)
    return f"{call} [{describe_dims(entry['dims'])}]: " + " | ".join(cells)


def format_markdown(result: Mapping) -> str:
    """The per-call table (medians, speed vs ORT, relative error, start) and the frames check, as Markdown."""
    configs = result["settings"]["configs"]
    lines = [f"Machine: {describe(result['machine'])}; CPU flags: "
             + ", ".join(f for f, on in result["cpu_flags"].items() if on) + "; OpenVINO " + str(result["openvino"]),
             f"Clip: {result['shapes']['frames']} frames at {result['shapes']['height']}x{result['shapes']['width']} px; "
             f"{result['settings']['repeats']} interleaved rounds after {result['settings']['warmup']} warm-up, medians.", ""]
    if result["calls"]:
        lines.append("| call | shape | " + " | ".join(configs) + " |")
        lines.append("|---|---|" + "---|" * len(configs))
        for call, e in result["calls"].items():
            cells = []
            for c in configs:
                s = e["configs"][c]
                cell = f"{s['median']:.3f} s"
                if c != REFERENCE:
                    cell += f" ({s['speed_vs_ort']:.2f}x, err {s['relative_error']:.1e})"
                cells.append(cell + f"<br>start {s['start_s']:.1f} s")
            lines.append(f"| {call} | {describe_dims(e['dims'])} | " + " | ".join(cells) + " |")
    if result.get("starts"):
        lines += ["", "OpenVINO start (compile) with an empty compiled-model cache, and the next start from it:", "",
                  "| network | precision | first start | from the cache |", "|---|---|---|---|"]
        for precision, per_network in result["starts"].items():
            for network, t in per_network.items():
                lines.append(f"| {network} | {precision} | {t['first_s']:.1f} s | {t['cached_s']:.1f} s |")
    if result.get("frames_check"):
        lines += ["", "SF-V one-step frames against ORT fp32 (same seed):", "",
                  "| configuration | PSNR | max level difference | clip seconds |", "|---|---|---|---|"]
        for c, f in result["frames_check"].items():
            lines.append(f"| {c} | {f['psnr_db']:.1f} dB | {f['max_level_diff']} | {f['seconds']:.2f} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.openvino",
        description="ONNX Runtime fp32 vs OpenVINO f32 vs OpenVINO bf16 per network call of one clip (same inputs, "
                    "interleaved, medians), with relative errors, and SF-V frames' PSNR against ONNX Runtime.",
    )
    p.add_argument("--bundle", required=True, help="exported fp32 bundle directory")
    p.add_argument("--calls", nargs="+", default=list(CALLS), choices=[*CALLS, "none"], help="calls to time (default all)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--frames", type=int, help="frames (default: the bundle's model's, 14 for SVD, 25 for SVD-XT)")
    p.add_argument("--height", type=int, default=128, help="pixel height (default 128)")
    p.add_argument("--width", type=int, default=128, help="pixel width (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, help="threads for every engine (default: the usable cores)")
    p.add_argument("--frames-check", action="store_true", help="also generate SF-V one-step clips and compare frames")
    p.add_argument("--start-check", metavar="CACHE_DIR",
                   help="also time each network's OpenVINO start with an empty compiled-model cache at CACHE_DIR "
                        "(must not exist) and again from it")
    p.add_argument("--out", help="write openvino.json and openvino.md here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    ov = import_openvino()
    threads = args.threads or usable_cores()
    bundle = Bundle.load(args.bundle)
    machine = machine_info(threads)  # before running: the load average should not include this run
    if warning := contention_warning(machine):
        log.warning("%s", warning)
    calls = [c for c in args.calls if c != "none"]
    result = {
        "benchmark": "openvino",
        "machine": machine,
        "cpu_flags": cpu_flags(),
        "openvino": ov.__version__.split("-")[0],
        "bundle": str(bundle.root),
        "shapes": {"frames": args.frames or bundle.config.num_frames, "height": args.height, "width": args.width},
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "threads": threads, "configs": args.configs},
        "calls": measure_calls(bundle, configs=args.configs, calls=calls, frames=args.frames, height=args.height,
                               width=args.width, repeats=args.repeats, warmup=args.warmup, threads=threads),
    }
    if args.start_check:
        if Path(args.start_check).exists():
            raise BenchmarkError(f"--start-check {args.start_check} exists; give a new directory so the first start is a cold one")
        networks = list(dict.fromkeys("unet" if c.startswith("unet") else c for c in calls)) or list(NETWORKS)
        result["starts"] = {p: measure_starts(bundle, Path(args.start_check) / p, networks=networks, ov_precision=p,
                                              threads=threads)
                            for p in ("f32", "bf16") if f"ov-{p}" in args.configs}
    if args.frames_check:
        result["frames_check"] = measure_frames(bundle.root, configs=args.configs, frames=args.frames,
                                                height=args.height, width=args.width, threads=threads)
    text = format_markdown(result)
    print(text)
    if args.out:
        write_json_and_markdown(args.out, "openvino", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
