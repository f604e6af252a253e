"""``python -m benchmarks.precision``: each graph variant against the fp32 graph, same run, same inputs.

    python -m benchmarks.precision --bundle out/tiny --frames 14 --height 64 --width 64
    python -m benchmarks.precision --bundle out/full --networks unet --inputs calib.npz --rounds 5 --psnr

Per network and precision (ONNX Runtime, CPU provider, both sessions loaded side by side):

- speed: the fp32 and the variant session are called alternately (``A B A B ...``, one warm-up
  round), medians of ``--rounds``; the ratio ``fp32 median / variant median`` (> 1: faster);
- error: ``rel_l2`` and ``max_abs`` of the variant's output against the fp32 output, per input.

UNet inputs come from ``--inputs`` (captured pipeline calls, e.g. the file ``python -m
export.variants --calibration`` saved: its held-out batch-1 calls at SF-V's sigma_max) or the
spec's seeded sample inputs. ``--psnr`` also runs SF-V's one step (``steps=1``, no guidance)
with each precision's engines (fp32 elsewhere) on the same images and noise and reports the
decoded frames' PSNR against the fp32 frames.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.machine import describe, machine_info
from benchmarks.timing import interleave, summarize, timed
from contract.atomic import write_json_atomic
from contract.bundle import Bundle
from contract.cli import run_cli
from contract.precision import parse_precisions, variants
from contract.specs import expand_dims
from engines.ort_engine import cpu_session_options
from export.calibration import Calibration, synthetic_images
from export.variants import output_error
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)


def _session(path, threads):
    return ort.InferenceSession(str(path), cpu_session_options(threads, quiet=True), providers=["CPUExecutionProvider"])


def network_inputs(bundle: Bundle, network: str, dims: Mapping[str, int], captured=None) -> list[dict[str, np.ndarray]]:
    """The feeds a network is measured on: captured UNet calls (batch 1) when given, else seeded samples."""
    if network == "unet" and captured is not None:
        calls = [c for c in captured.validate + captured.calibrate if c["sample"].shape[0] == 1]
        if calls:
            return calls[:2]
    spec = bundle.spec(network)
    used = {**dims, "batch": 1}
    inputs = spec.sample_inputs(expand_dims(used, bundle.config), bundle.config)
    return [{k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}]


def measure_network(bundle: Bundle, network: str, precisions: Sequence[str], feeds_list, rounds: int, threads: int) -> dict:
    """Time and compare every variant of ``network`` in ``precisions`` against its fp32 graph."""
    have = variants(bundle.manifest, network)
    output = bundle.spec(network).output_names[0]
    fp32 = _session(bundle.root / have["fp32"]["file"], threads)
    wants = [fp32.run([output], f)[0] for f in feeds_list]
    feeds = feeds_list[0]
    result = {}
    for precision in precisions:
        if precision == "fp32" or precision not in have:
            continue
        session = _session(bundle.root / have[precision]["file"], threads)
        errors = [output_error(session.run([output], f)[0], w) for f, w in zip(feeds_list, wants)]
        times = interleave(
            {"fp32": timed(lambda: fp32.run([output], feeds)), precision: timed(lambda s=session: s.run([output], feeds))},
            rounds,
            warmup=1,
        )
        a, b = summarize(times["fp32"]), summarize(times[precision])
        result[precision] = {
            "fp32_s": a.to_json(),
            "variant_s": b.to_json(),
            "speedup": a.median / b.median,
            "rel_l2": [e["rel_l2"] for e in errors],
            "max_abs": [e["max_abs"] for e in errors],
            "inputs": {k: list(v.shape) for k, v in feeds.items()},
        }
        log.info("%s %s: fp32 %.3f s, %s %.3f s (%.2fx), rel. L2 %s", network, precision, a.median, precision, b.median,
                 a.median / b.median, ", ".join(f"{e['rel_l2']:.3g}" for e in errors))
        del session
        gc.collect()
    del fp32
    gc.collect()
    return result


def sfv_psnr(bundle: Bundle, precisions: Sequence[str], frames: int, height: int, width: int, images: int, threads: int) -> dict:
    """PSNR (dB) of SF-V one-step frames with each precision's engines against the fp32 frames."""
    pictures = synthetic_images(images + 10, height, width, seed=1)[-images:]  # not the calibration images
    frames_by = {}
    for precision in ["fp32", *[p for p in precisions if p != "fp32"]]:
        with VideoPipeline.from_bundle(bundle.root, "onnxruntime", precision=precision, threads=threads) as pipe:
            frames_by[precision] = [
                pipe(img, num_frames=frames, height=height, width=width, steps=1, min_guidance=1.0, max_guidance=1.0,
                     seed=10 + i, progress=False).frames
                for i, img in enumerate(pictures)
            ]
        gc.collect()
    out = {}
    for precision, clips in frames_by.items():
        if precision == "fp32":
            continue
        values = []
        for got, want in zip(clips, frames_by["fp32"]):
            mse = float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2))
            values.append(10 * np.log10(255.0**2 / max(mse, 1e-12)))
        out[precision] = {"psnr_db": values, "min_psnr_db": min(values)}
        log.info("SF-V frames %s vs fp32: PSNR %s dB", precision, ", ".join(f"{v:.1f}" for v in values))
    return out


def format_table(result: dict) -> str:
    lines = [
        f"Machine: {describe(result['machine'])}",
        "",
        "| network | precision | fp32 s | variant s | speed ratio | rel. L2 vs fp32 | max abs |",
        "|---|---|---|---|---|---|---|",
    ]
    for network, per in result["networks"].items():
        for precision, r in per.items():
            lines.append(
                f"| {network} | {precision} | {r['fp32_s']['median']:.3f} | {r['variant_s']['median']:.3f} | "
                f"{r['speedup']:.2f}x | {max(r['rel_l2']):.3g} | {max(r['max_abs']):.3g} |"
            )
    for precision, r in result.get("psnr", {}).items():
        lines.append(f"\nSF-V one-step frames, {precision} vs fp32: PSNR {', '.join(f'{v:.1f}' for v in r['psnr_db'])} dB")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.precision",
        description="Speed and error of a bundle's precision variants against its fp32 graphs (ONNX Runtime CPU, same run).",
    )
    p.add_argument("--bundle", required=True, help="bundle with variants (python -m export.onnx --precision ...)")
    p.add_argument("--networks", nargs="+", help="networks to measure (default: all in the bundle)")
    p.add_argument("--precisions", default="fp16,int8,fp8", help="variants to measure (default fp16,int8,fp8: those present)")
    p.add_argument("--inputs", help="captured UNet calls (.npz from python -m export.variants --calibration)")
    p.add_argument("--frames", type=int, help="frames (default: the bundle's model's)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per pair (default 3; one warm-up round more)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--psnr", action="store_true", help="also compare SF-V one-step frames per precision")
    p.add_argument("--psnr-images", type=int, default=2)
    p.add_argument("--out", help="write the result as JSON here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    precisions = [p for p in parse_precisions(args.precisions) if p != "fp32" or args.precisions == "fp32"]
    bundle = Bundle.load(args.bundle)
    captured = None
    if args.inputs:
        captured = Calibration.load(args.inputs)
    info = machine_info(args.threads)
    frames = args.frames or bundle.config.num_frames
    dims = {"batch": 1, "frames": frames, "height": args.height, "width": args.width}
    result = {"machine": info, "bundle": str(bundle.root), "dims": dims, "networks": {}}
    for network in args.networks or bundle.networks:
        feeds = network_inputs(bundle, network, dims, captured)
        result["networks"][network] = measure_network(bundle, network, precisions, feeds, args.rounds, args.threads)
    if args.psnr:
        present = {p for n in bundle.networks for p in variants(bundle.manifest, n)}
        quantized = [p for p in precisions if p in present and p != "fp32"]
        result["psnr"] = sfv_psnr(bundle, quantized, frames, args.height, args.width, args.psnr_images, args.threads)
    result["load_after"] = machine_info(args.threads)["load_average"]
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, json.loads(json.dumps(result, default=float)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
