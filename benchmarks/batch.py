"""``python -m benchmarks.batch``: SF-V clips per second at batch 1, 2, 4, 8, in one run.

One pipeline (one backend, one thread count) makes SF-V clips (one step, no guidance: UNet batch
B) from B images per call, ``runtime.pipeline.VideoPipeline``'s batched path. Each round calls
every batch size once, alternated (``1 2 4 8 1 2 4 8 ...``) after a warm-up round, so that load
from other processes hits every size alike; the table shows each size's median clips/s with its
quartiles, the ratio to batch 1 (same run), and the per-clip median seconds of each stage, which
say where batching pays (the UNet and the encoders run once per batch; the decoder per clip).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from benchmarks.errors import BenchmarkError
from benchmarks.machine import contention_warning, describe, load_average, machine_info
from benchmarks.report import write_json_and_markdown
from benchmarks.timing import interleave, set_threads, summarize
from benchmarks.workload import ensure_bundle, model_info, resolve_shape, synthetic_image
from contract.bundle import Bundle
from contract.cli import run_cli
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)

DEFAULT_BATCHES = (1, 2, 4, 8)
BACKENDS = ("onnxruntime", "openvino")
SFV = dict(steps=1, min_guidance=1.0, max_guidance=1.0)  # SF-V's one step (paper Eq. 6), UNet batch B
PER_CLIP_STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder", "total")


def run(model="tiny", *, bundle_dir=None, backend: str = "onnxruntime", batches: Sequence[int] = DEFAULT_BATCHES,
        frames: int | None = None, height: int | None = None, width: int | None = None, repeats: int = 5,
        warmup: int = 1, threads: int | None = None) -> dict:
    """Time SF-V calls of every batch size, alternated; return the JSON-ready result."""
    batches = sorted(set(int(b) for b in batches))
    if not batches or batches[0] < 1:
        raise BenchmarkError(f"batch sizes must be positive integers, got {list(batches)}")
    if backend not in BACKENDS:
        raise BenchmarkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    machine = machine_info(threads)  # before running: the load average should not include this run
    bundle = Bundle.load(bundle_dir) if bundle_dir is not None else ensure_bundle(model)
    frames, height, width = resolve_shape(bundle.config, frames, height, width)
    threads = set_threads(threads)
    machine["threads"] = threads
    # Distinct images (a shifted gradient each): the content changes no timing, but no two clips are alike.
    images = [synthetic_image(height, width).rotate(90 * (i % 4)) for i in range(max(batches))]
    call = dict(num_frames=frames, height=height, width=width, progress=False, **SFV)

    with VideoPipeline.from_bundle(bundle.root, backend=backend, threads=threads) as pipe:
        def sampler(b: int):
            def sample() -> dict:
                start = time.perf_counter()
                results = pipe(images[:b], seed=0, **call)
                wall = time.perf_counter() - start
                t = results[0].timings
                if len(results) != b or t["batch"] != b or t["unet_calls"] != 1:
                    raise BenchmarkError(f"batch {b}: expected {b} clips from one UNet call, got {len(results)} ({t})")
                return {"clips_per_s": b / wall, **{k: t[k] / b for k in PER_CLIP_STAGES}}
            return sample

        log.info("timing batch sizes %s: %d warm-up + %d alternated rounds", batches, warmup, repeats)
        samples = interleave({b: sampler(b) for b in batches}, repeats, warmup)

    rows = []
    base = summarize([s["clips_per_s"] for s in samples[batches[0]]]).median
    for b in batches:
        rate = summarize([s["clips_per_s"] for s in samples[b]])
        rows.append({
            "batch": b,
            "clips_per_s": rate.to_json(),
            "ratio_to_smallest": rate.median / base,
            "seconds_per_clip": {k: summarize([s[k] for s in samples[b]]).median for k in PER_CLIP_STAGES},
            "samples": samples[b],
        })
    return {
        "benchmark": "batch",
        "machine": machine,
        "backend": backend,
        "model": model_info(bundle=bundle, source=None if bundle_dir is not None else str(model)),
        "shape": {"frames": frames, "height": height, "width": width},
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "batches": batches,
                     "bundle": str(bundle.root), "mode": "SF-V one step, no guidance"},
        "load_after": load_average(),
        "rows": rows,
    }


def format_text(result: dict) -> str:
    """The table: batch, clips/s (median [q1, q3]), ratio to the smallest batch, seconds per clip by stage."""
    s, shape = result["settings"], result["shape"]
    lines = [
        f"SF-V clips/s by batch size: {result['model']['source']}, {shape['frames']} frames {shape['width']}x{shape['height']}, "
        f"{result['backend']}",
        f"machine: {describe(result['machine'])}; load after {result['load_after'][0] if result['load_after'] else '?'}",
        f"{s['repeats']} alternated rounds after {s['warmup']} warm-up; medians [quartiles]",
        "",
        "| batch | clips/s | vs batch " + str(result["rows"][0]["batch"]) + " | "
        + " | ".join(f"{k} s/clip" for k in PER_CLIP_STAGES) + " |",
        "|---:|---:|---:|" + "---:|" * len(PER_CLIP_STAGES),
    ]
    for row in result["rows"]:
        r = row["clips_per_s"]
        lines.append(f"| {row['batch']} | {r['median']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}] | {row['ratio_to_smallest']:.2f}x | "
                     + " | ".join(f"{row['seconds_per_clip'][k]:.4f}" for k in PER_CLIP_STAGES) + " |")
    warning = contention_warning(result["machine"])
    if warning:
        lines += ["", f"warning: {warning}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.batch",
        description="SF-V clips per second at several batch sizes (one pipeline call makes B clips), alternated in one run.",
        epilog="examples:\n"
               "  python -m benchmarks.batch                                  # tiny model, exported once and cached\n"
               "  python -m benchmarks.batch --bundle B --batches 1,2,4,8 --threads 2 --out results/batch\n"
               "  python -m benchmarks.batch --model svd-random --frames 14 --height 128 --width 128 --repeats 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="exported bundle to time")
    src.add_argument("--model", default="tiny", help="tiny (default), svd-random or a diffusers SVD directory, exported "
                                                     "once into $SFV_CACHE/bundles")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="default onnxruntime (CPU)")
    p.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)),
                   help="comma-separated batch sizes (default %(default)s)")
    p.add_argument("--frames", type=int, help="frames (default: the model's)")
    p.add_argument("--height", type=int, help="pixel height (default: the model's)")
    p.add_argument("--width", type=int, help="pixel width (default: the model's)")
    p.add_argument("--repeats", type=int, default=5, help="alternated timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's, the usable cores)")
    p.add_argument("--out", help="write results.json and results.md here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise BenchmarkError(f"--batches takes comma-separated integers such as 1,2,4,8, got {args.batches!r}") from None
    if args.repeats < 1:
        raise BenchmarkError(f"--repeats must be >= 1, got {args.repeats}")
    result = run(args.model if args.bundle is None else None, bundle_dir=args.bundle, backend=args.backend, batches=batches,
                 frames=args.frames, height=args.height, width=args.width, repeats=args.repeats, warmup=args.warmup,
                 threads=args.threads)
    text = format_text(result)
    print(text)
    if args.out:
        paths = write_json_and_markdown(args.out, "results", result, text)
        print(f"\nwrote {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
