"""``python -m benchmarks.speedup``: SVD at 25 and 16 steps vs SF-V at 1 step, beside the paper's Table 1.

One backend, one process, the same weights and shapes for every configuration:

- SVD 25 / 16 steps: guidance 1.0 -> 3.0 over the frames, UNet batch 2 (CFG doubles it);
- SF-V 1 step: the schedule ``[sigma_max, 0]``, no guidance, UNet batch 1 (paper Eq. 6).

Each stage of :class:`runtime.pipeline.VideoPipeline` is timed (preprocess, CLIP image encoder,
VAE encoder, UNet over all steps, temporal VAE decoder, end to end). A warm-up round runs first;
the configurations are then interleaved (``A B C A B C ...``) for ``--repeats`` rounds and the
table shows medians with quartiles. Speedups divide each configuration's median by SF-V's.

Modes (``--mode auto`` picks):

- ``loop`` (models up to 100 M UNet parameters, e.g. ``tiny``): the full sampling loops run for
  real; the per-step model of :mod:`benchmarks.per_step` is checked against them;
- ``per-step`` (larger models, e.g. ``svd-random``): each stage is timed one call at a time and
  totals are ``steps x per-step`` (marked ``*``).

``--out DIR`` writes ``results.json``, ``results.md`` and ``speedup.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.errors import BenchmarkError
from benchmarks.machine import load_average, machine_info, usable_cores
from benchmarks.per_step import call_samplers, check_prediction, derive_configs, run_per_step
from benchmarks.recipe import run as measure_recipe
from benchmarks.report import add_speedups, end_to_end_ratio, format_text, paper_entry, with_sampler, write_results
from benchmarks.timing import interleave, set_threads, summarize, summarize_dicts
from benchmarks.workload import BACKENDS, DEFAULT_CONFIGS, RunConfig, ensure_bundle, model_info, resolve_shape, shapes_info, synthetic_image
from contract.cli import run_cli
from contract.specs import STAGES
from engines.factory import model_engines, pipeline_engines
from engines.recipe import read_recipe, recipe_path, this_cpu
from networks.models import BUILTIN_MODELS, check_layout, load_model
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)

_TIMED = (*STAGES, "total")


def run_loops(
    model="tiny",
    *,
    backend: str = "onnxruntime",
    bundle_dir=None,
    configs: Sequence[str] = DEFAULT_CONFIGS,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    check: bool = True,
) -> dict:
    """Run every configuration's full pipeline ``repeats`` times, interleaved; return the result dict.

    With ``check``, each stage is also timed one call at a time and the per-step prediction
    (``steps x per-step``) is compared with the measured loops (``result["per_step_model"]``).
    """
    if backend not in BACKENDS:
        raise BenchmarkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    run_configs = [RunConfig.parse(c) for c in configs]
    if len({c.name for c in run_configs}) != len(run_configs):
        raise BenchmarkError(f"configurations repeat: {list(configs)}")
    machine = machine_info(threads)  # before running: the load average should not include this run
    loaded = load_model(model)
    bundle = ensure_bundle(model, bundle_dir) if backend == "onnxruntime" else None
    if bundle is not None and "vae_decoder_fast" in bundle.networks and tuple(configs) == DEFAULT_CONFIGS:
        run_configs.append(RunConfig.parse("sfvfast-1"))  # the bundle has a distilled decoder: time its row too
    if bundle is not None and tuple(configs) == DEFAULT_CONFIGS:
        run_configs.append(RunConfig.parse("sfvrecipe-1"))  # the whole toolkit on this CPU, not only the UNet
    config = loaded.config
    frames, height, width = resolve_shape(config, frames, height, width)
    make = lambda t: model_engines(loaded) if backend == "torch" else pipeline_engines(bundle, backend, threads=t)
    image = synthetic_image(height, width)
    if threads is None:
        threads, thread_choice = choose_threads(make, image, dict(num_frames=frames, height=height, width=width))
    else:
        thread_choice = {"chosen": threads, "why": "given with --threads"}
    set_threads(threads)
    machine["threads"] = threads
    engines = make(threads)
    recipe = None
    if any(rc.kind == "sfvrecipe" for rc in run_configs):
        if bundle is None:
            raise BenchmarkError("sfvrecipe-1 runs a bundle's engines: use --backend onnxruntime")
        recipe = measured_recipe(bundle, threads, frames, height, width)
    pipes = {"fp32": VideoPipeline(engines)}
    if recipe is not None:
        pipes["recipe"] = VideoPipeline(pipeline_engines(bundle, backend, threads=threads, engines=recipe))

    with pipes["fp32"], pipes.get("recipe", pipes["fp32"]):
        def sampler(rc: RunConfig):
            def run() -> dict:
                result = pipes["recipe" if rc.kind == "sfvrecipe" else "fp32"](image, num_frames=frames, height=height, width=width, seed=0, progress=False,
                              **rc.pipeline_kwargs())
                if result.timings["unet_calls"] != rc.steps:
                    raise BenchmarkError(f"{rc.name}: expected {rc.steps} UNet calls, got {result.timings['unet_calls']}")
                return with_sampler(result.timings)
            return run

        samplers = {rc.name: sampler(rc) for rc in run_configs}
        if check:  # single calls for the per-step model, interleaved with the loops they predict
            samplers.update({f"call/{k}": v for k, v in call_samplers(engines, config, frames, height, width).items()})
        log.info("timing %s: %d warm-up + %d interleaved rounds", ", ".join(samplers), warmup, repeats)
        samples = interleave(samplers, repeats, warmup)
        calls = {k[5:]: summarize(v) for k, v in samples.items() if k.startswith("call/")} if check else None

    entries = []
    for rc in run_configs:
        stats = summarize_dicts(samples[rc.name], _TIMED)
        entries.append({
            **rc.describe(), "derived": False, "n": repeats,
            "median": {k: s.median for k, s in stats.items()},
            "q1": {k: s.q1 for k, s in stats.items()},
            "q3": {k: s.q3 for k, s in stats.items()},
            "min": {k: s.min for k, s in stats.items()},
            "max": {k: s.max for k, s in stats.items()},
            "samples": samples[rc.name],
            "paper": paper_entry(rc.kind, rc.steps),
        })
    add_speedups(entries, reference="sfv-1")
    result = {
        "benchmark": "speedup",
        "machine": machine,
        "backend": backend,
        "model": model_info(loaded, source=str(model)),
        "shapes": shapes_info(config, frames, height, width),
        "load_after": load_average(),
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "thread_choice": thread_choice, "mode": "loop",
                     "configs": [c.name for c in run_configs], "bundle": str(bundle.root) if bundle else None},
        "configs": entries,
        "fast_decoder_speedup": end_to_end_ratio(entries, "svd-25", "sfvfast-1"),
        "recipe_speedup": end_to_end_ratio(entries, "svd-25", "sfvrecipe-1"),
        "recipe": {n: str(c) for n, c in recipe.items()} if recipe else None,
    }
    if calls is not None:
        result["calls"] = {k: v.to_json() for k, v in calls.items()}
        # The per-step model times SVD's decoder on the fp32 engines: the fast decoder's and the recipe's rows are not in it.
        full = [rc for rc in run_configs if rc.decoder == "full" and rc.kind != "sfvrecipe"]
        names = {rc.name for rc in full}
        result["per_step_model"] = check_prediction([e for e in entries if e["name"] in names], derive_configs(calls, full))
        if not result["per_step_model"]["within_5_percent"]:
            load = machine["load_average"][0] if machine["load_average"] else None
            result["per_step_model"]["reason"] = (
                "Why: single calls and full loops ran at different moments of a loaded machine (the load warning "
                "above), and the prediction misses when the load changes between them; rerun with more --repeats on "
                "a quieter machine."
                if load is not None and load >= 0.5 * machine["cores"] else
                "Why: the machine was quiet, so the per-step model itself misses: some cost is not per step or per call.")
    return result


def measured_recipe(bundle, threads: int, frames: int, height: int, width: int) -> dict:
    """The bundle's recipe for this CPU at ``threads`` (``recipe.json``), measured now if it has none
    for this CPU and thread count (:func:`benchmarks.recipe.run`, without its own end-to-end run:
    the speedup table's alternated rounds are that)."""
    path = recipe_path(bundle.root)
    if path.is_file():
        doc = read_recipe(path)
        if doc["cpu"] == this_cpu() and (doc.get("measured") or {}).get("threads") == [threads]:
            log.info("recipe: %s (measured on this CPU at %d threads)", path, threads)
            return doc["engines"]
    log.info("recipe: measuring this CPU's engines at %d threads (python -m benchmarks.recipe)", threads)
    result = measure_recipe(bundle.root, frames=frames, height=height, width=width, threads=[threads], e2e_rounds=0)
    return read_recipe(path)["engines"] if result.get("written") else {}


def choose_threads(engines_for, image, call: dict, rounds: int = 3) -> tuple[int, dict]:
    """The intra-op thread count for this run, by measurement: one SF-V clip at 1 thread and at
    the usable cores, interleaved ``rounds`` times; the faster median wins.

    On an idle machine more threads win; on a shared one, threads that wait for a busy core
    make a run slower and erratic (measured: ``--threads 1`` 2-5x faster than 2 at load 6 on 2
    cores), so the choice must be made on the machine, at the time of the run.
    """
    candidates = sorted({1, usable_cores()})
    if len(candidates) == 1:
        return 1, {"chosen": 1, "why": "one usable core"}
    pipes = {t: VideoPipeline(engines_for(t)) for t in candidates}

    def clip(t):
        def run():
            set_threads(t)
            start = time.perf_counter()
            pipes[t](image, steps=1, min_guidance=1.0, max_guidance=1.0, seed=0, progress=False, **call)
            return time.perf_counter() - start
        return run

    times = interleave({t: clip(t) for t in candidates}, rounds, warmup=1)
    for pipe in pipes.values():
        pipe.close()
    medians = {t: summarize(v).median for t, v in times.items()}
    best = min(medians, key=medians.get)
    why = ("faster one-step clip: " + ", ".join(f"{t} thread{'s' if t > 1 else ''} {m:.3f} s" for t, m in medians.items())
           + f" (medians of {rounds} interleaved rounds)")
    log.info("threads: %d (%s)", best, why)
    return best, {"chosen": best, "why": why, "medians": {str(t): m for t, m in medians.items()}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speedup",
        description="SVD (25 and 16 steps, guidance) vs SF-V (1 step) on one backend: per-stage latency, "
                    "speedups and the paper's Table 1 side by side.",
        epilog="examples:\n"
               "  python -m benchmarks.speedup                          # tiny model, ONNX Runtime, ~2 min\n"
               "  python -m benchmarks.speedup --out results/tiny\n"
               "  python -m benchmarks.speedup --model svd-random --backend torch --threads 2 --out results/full\n"
               "  python -m benchmarks.speedup --model ~/svd-img2vid --height 576 --width 1024 --backend onnxruntime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny", help="tiny (default), svd-random or a diffusers SVD directory")
    p.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS), help="default onnxruntime")
    p.add_argument("--bundle", help="exported bundle (default: export once, cached under $SFV_CACHE/bundles)")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                   help="svd-STEPS (guidance) / sfv-1 / sfvfast-1 (SF-V with the bundle's distilled decoder) "
                        "(default: %(default)s, plus sfvfast-1 when the bundle has a fast decoder)")
    p.add_argument("--mode", choices=("auto", "loop", "per-step"), default="auto",
                   help="loop: full sampling loops; per-step: steps x per-step (auto: loop up to 100 M UNet parameters)")
    p.add_argument("--frames", type=int, help="frames (default: the model's, 14 for SVD, 25 for SVD-XT)")
    p.add_argument("--height", type=int, help="pixel height (default: the model's; per-step mode: 128)")
    p.add_argument("--width", type=int, help="pixel width (default: the model's; per-step mode: 128)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds after the warm-up (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, help="intra-op threads, torch and ONNX Runtime (default: measured, the faster of "
                                                "1 and the usable cores for a one-step clip on this machine now)")
    p.add_argument("--no-check", action="store_true", help="loop mode: skip the per-step model check")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check fails (default: a marked warning)")
    p.add_argument("--out", help="write results.json, results.md and speedup.png here")
    return p


def _auto_mode(model) -> str:
    if str(model) == "tiny":
        return "loop"
    if str(model) in BUILTIN_MODELS:
        return "per-step"

    path = Path(model)
    check_layout(path, components=("unet",))
    cfg = json.loads((path / "unet" / "config.json").read_text())
    # Parameter count without loading: the SVD UNet is ~1.5 B; any UNet with 320+ channels is large.
    return "per-step" if max(cfg.get("block_out_channels", [0])) >= 320 else "loop"


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.repeats < 1:
        raise BenchmarkError(f"--repeats must be >= 1, got {args.repeats}")
    mode = _auto_mode(args.model) if args.mode == "auto" else args.mode
    common = dict(backend=args.backend, bundle_dir=args.bundle, configs=args.configs, repeats=args.repeats,
                  warmup=args.warmup, threads=args.threads)
    if mode == "loop":
        result = run_loops(args.model, frames=args.frames, height=args.height, width=args.width,
                           check=not args.no_check, **common)
    else:
        result = run_per_step(args.model, frames=args.frames, height=args.height or 128,
                              width=args.width or 128, **common)
    print(format_text(result))
    if args.out:
        paths = write_results(result, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    check = result.get("per_step_model")
    if check and not check["within_5_percent"]:
        # Listed once, with what it means, at the end of the table above (and in results.md).
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
