"""Per-call cost of each stage, and clip totals as ``steps x per-step`` (for the full-size model).

A full 25-step SVD loop of the full-size UNet takes ~10 minutes on a 2-core CPU, so for that
model each stage is timed one call at a time (interleaved, medians over repeats):

    preprocess, image_encoder [1, 3, 224, 224], vae_encoder [1, 3, H, W],
    unet_b2 (one guided SVD step, batch 2), unet_b1 (one SF-V step, batch 1),
    vae_decoder [F, 4, H/8, W/8]

and a configuration's time is predicted as

    total(steps, guidance) = preprocess + image_encoder + vae_encoder + steps * unet_b{2|1} + vae_decoder.

On the tiny model ``python -m benchmarks.speedup`` measures the full loops as well and reports
how far this prediction is from them.

``python -m benchmarks.per_step --model svd-random --backend torch --height 128 --width 128`` (frames: the model's)
"""

from __future__ import annotations

import argparse
import gc
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.flops import format_roofline, gemm_sampler, network_flops, roofline_rows
from benchmarks.machine import machine_info, usable_cores
from benchmarks.report import add_speedups, format_text, paper_entry, write_results
from benchmarks.timing import Stats, interleave, set_threads, summarize, timed
from benchmarks.workload import (
    BACKENDS,
    CALLS,
    DEFAULT_CONFIGS,
    RunConfig,
    build_calls,
    ensure_bundle,
    model_info,
    resolve_shape,
    shapes_info,
    synthetic_image,
)
from contract.cli import run_cli
from contract.specs import SAMPLER_STAGE, STAGES
from engines.factory import model_engines, pipeline_engines
from networks.models import load_model
from runtime.conditioning import added_time_ids, augment_image, guidance_scales
from runtime.denoiser import SVDDenoiser
from runtime.preprocess import load_image, pixels, vae_pixels

log = logging.getLogger(__name__)


def preprocess_sampler(engines, config, height: int, width: int) -> Callable[[], float]:
    """Times the pipeline's stage 1: the CLIP view (the ``clip_preprocess`` graph) and the
    noise-augmented VAE view of an image."""
    image = synthetic_image(height, width)
    rng = np.random.default_rng(0)

    def run():
        pil = load_image(image)
        engines.clip_preprocess.run({"pixels": pixels(pil)})
        vae = vae_pixels(pil, height, width)
        augment_image(vae, config.noise_aug_strength, rng.standard_normal(vae.shape, dtype=np.float32))

    return timed(run)


def unet_step_sampler(engine, config, frames: int, height: int, width: int, guidance: bool) -> Callable[[], float]:
    """Times one denoiser step exactly as the sampler makes it: EDM preconditioning around one UNet
    call, batch 2 with classifier-free guidance (and the per-frame CFG combination), else batch 1."""
    rng = np.random.default_rng(0)
    h, w = height // config.vae_scale_factor, width // config.vae_scale_factor
    denoiser = SVDDenoiser(
        engine,
        rng.standard_normal((1, config.embed_dim), dtype=np.float32),
        rng.standard_normal((1, config.latent_channels, h, w), dtype=np.float32),
        added_time_ids(config.fps, config.motion_bucket_id, config.noise_aug_strength, config.num_time_ids),
        frames,
        guidance_scales(config.min_guidance, config.max_guidance, frames) if guidance else None,
    )
    x = rng.standard_normal((1, frames, config.latent_channels, h, w), dtype=np.float32)
    sigma = np.float32(config.sigma_max)
    return timed(lambda: denoiser(x, sigma))


def call_samplers(engines, config, frames: int, height: int, width: int,
                  calls: Sequence[str] = CALLS) -> dict[str, Callable[[], float]]:
    """``{call: sampler}`` for the stages of one clip (``engines``: :class:`engines.factory.Engines`);
    UNet calls go through the denoiser."""
    samplers = {"preprocess": preprocess_sampler(engines, config, height, width)}
    for call, (network, inputs) in build_calls(config, frames, height, width, calls).items():
        if network == "unet":
            samplers[call] = unet_step_sampler(engines.unet, config, frames, height, width, call == "unet_b2")
        else:
            samplers[call] = timed(lambda e=getattr(engines, network), i=inputs: e.run(i))
    return samplers


def measure_calls(
    engines: Mapping, config, frames: int, height: int, width: int, repeats: int, warmup: int = 1,
    calls: Sequence[str] = CALLS, extra: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, Stats]:
    """Median per-call seconds of each stage, calls interleaved round by round.

    ``extra`` samplers (e.g. the roofline's GEMM) join the same rounds; their stats come back too.
    """
    samplers = {**call_samplers(engines, config, frames, height, width, calls), **(extra or {})}
    return {name: summarize(values) for name, values in interleave(samplers, repeats, warmup).items()}


def derive_configs(calls: Mapping[str, Stats], configs: Sequence[RunConfig]) -> list[dict]:
    """Each configuration's per-stage times from per-call costs (``unet = steps x per step``).

    ``q1``/``q3`` are the same sums over the per-call quartiles: a band, not the quartiles
    of a measured total.
    """
    out = []
    for rc in configs:
        unet = calls[f"unet_b{rc.unet_batch}"]
        entry = {**rc.describe(), "derived": True, "n": min(s.n for s in calls.values()),
                 "paper": paper_entry(rc.kind, rc.steps)}
        for q in ("median", "q1", "q3"):
            stages = {s: getattr(calls[s], q) for s in ("preprocess", "image_encoder", "vae_encoder", "vae_decoder")}
            stages["unet"] = rc.steps * getattr(unet, q)
            stages[SAMPLER_STAGE] = 0.0  # per-call costs have no sampler share
            stages["total"] = sum(stages[s] for s in STAGES)
            entry[q] = stages
        out.append(entry)
    add_speedups(out, reference="sfv-1")
    return out


def check_prediction(measured: Sequence[dict], predicted: Sequence[dict]) -> dict:
    """Relative error of the per-step prediction against measured full loops, per configuration."""
    by_name = {c["name"]: c for c in predicted}
    rows, worst = {}, 0.0
    for m in measured:
        p = by_name[m["name"]]
        row = {}
        for key in ("unet", "total"):
            row[f"{key}_predicted"] = p["median"][key]
            row[f"{key}_measured"] = m["median"][key]
            row[f"{key}_error"] = p["median"][key] / m["median"][key] - 1 if m["median"][key] else 0.0
            worst = max(worst, abs(row[f"{key}_error"]))
        rows[m["name"]] = row
    return {"configs": rows, "max_abs_error": worst, "within_5_percent": worst <= 0.05}


def run_per_step(
    model="svd-random",
    *,
    backend: str = "torch",
    bundle_dir=None,
    configs: Sequence[str] = DEFAULT_CONFIGS,
    frames: int | None = None,  # None: the model's (its UNet config's num_frames, 25 for SVD-XT)
    height: int | None = 128,
    width: int | None = 128,
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    roofline: bool = True,
    gemm_size: int = 1024,
) -> dict:
    """Measure the per-call costs on ``backend`` and derive the speedup table (see module doc)."""
    if backend not in BACKENDS:
        raise BenchmarkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    run_configs = [RunConfig.parse(c) for c in configs]
    threads = set_threads(threads or usable_cores())
    machine = machine_info(threads)  # before running: the load average should not include this run
    # The torch backend and the FLOP count need the PyTorch model; ONNX Runtime needs the bundle.
    loaded = load_model(model) if backend == "torch" or roofline else None
    bundle = ensure_bundle(model, bundle_dir) if backend == "onnxruntime" else None
    config = loaded.config if loaded is not None else bundle.config
    frames, height, width = resolve_shape(config, frames, height, width)
    if loaded is not None and backend == "onnxruntime" and roofline:
        # Count FLOPs first, then free the PyTorch weights before ONNX Runtime loads its own copy.

        flops = network_flops(loaded, build_calls(config, frames, height, width))
        info = model_info(loaded, source=str(model))
        loaded = None
        gc.collect()
    else:
        flops, info = None, None
    engines = model_engines(loaded) if backend == "torch" else pipeline_engines(bundle, backend, threads=threads)
    extra, gemm_flops = {}, 0.0
    if roofline:
        extra["gemm"], gemm_flops = gemm_sampler(gemm_size)
    calls = measure_calls(engines, config, frames, height, width, repeats, warmup, extra=extra)
    gemm_times = calls.pop("gemm", None)
    result = {
        "benchmark": "per_step",
        "machine": machine,
        "backend": backend,
        "model": info or model_info(loaded, bundle, source=str(model)),
        "shapes": shapes_info(config, frames, height, width),
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "mode": "per-step"},
        "calls": {k: v.to_json() for k, v in calls.items()},
        "configs": derive_configs(calls, run_configs),
    }
    if roofline:
        peak = _gemm_peak(gemm_times, gemm_flops)
        if flops is None:
            flops = network_flops(loaded, build_calls(config, frames, height, width))
        result["roofline"] = {
            "gemm": {**peak.to_json(), "size": gemm_size},
            "flops": flops,
            "rows": {backend: roofline_rows(flops, {c: calls[c].median for c in flops}, peak.median)},
        }
    return result


def _gemm_peak(times: Stats, flops: float) -> Stats:
    """GFLOP/s stats from GEMM time stats (fast times give high throughput: the quartiles swap)."""
    g = lambda t: flops / t / 1e9
    return Stats(n=times.n, median=g(times.median), q1=g(times.q3), q3=g(times.q1), min=g(times.max), max=g(times.min))


def format_calls(result: dict) -> str:
    lines = [f"per call ({result['backend']}, median [q1-q3] seconds):"]
    for name, s in result["calls"].items():
        lines.append(f"  {name:<14} {s['median']:9.4f} [{s['q1']:.4f}-{s['q3']:.4f}]")
    if "roofline" in result:
        lines += ["", format_roofline(result["roofline"]["rows"], Stats.from_json(result["roofline"]["gemm"]))]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.per_step",
        description="Time each stage one call at a time (UNet at batch 2 and batch 1) and state each "
                    "configuration's time as steps x per-step: for models whose full loops take too long.",
    )
    p.add_argument("--model", default="svd-random",
                   help="svd-random (default; ~9 GB written once to $SFV_CACHE, ~10 GB RAM), tiny or a directory")
    p.add_argument("--backend", default="torch", choices=list(BACKENDS))
    p.add_argument("--bundle", help="exported bundle for --backend onnxruntime (default: export once and cache)")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="svd-STEPS / sfv-1 (default %(default)s)")
    p.add_argument("--frames", type=int, help="frames (default: the model's, 14 for SVD, 25 for SVD-XT)")
    p.add_argument("--height", type=int, default=128, help="pixel height (default 128: 16x16 latents)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="intra-op threads (default: the usable cores)")
    p.add_argument("--no-roofline", action="store_true", help="skip the FLOP count and GEMM peak")
    p.add_argument("--out", help="write per_step.json, per_step.md and per_step.png here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run_per_step(
        args.model, backend=args.backend, bundle_dir=args.bundle, configs=args.configs, frames=args.frames,
        height=args.height, width=args.width, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
        roofline=not args.no_roofline,
    )
    print(format_text(result))
    print()
    print(format_calls(result))
    if args.out:
        paths = write_results(result, args.out, prefix="per_step", chart="per_step.png")
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
