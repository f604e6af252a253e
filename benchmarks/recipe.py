"""``python -m benchmarks.recipe``: the fastest engines per network on this CPU, within a quality bound.

    python -m benchmarks.recipe --bundle out/tiny --frames 14 --height 64 --width 64
    python -m benchmarks.recipe --bundle out/full --threads 2 --rounds 3 --out results/recipe

1. **The bundle's own calls.** The fp32 ONNX Runtime pipeline runs one SF-V clip (one step,
   no guidance) and every network's inputs are recorded (the fast decoder takes the decoder's).
2. **Candidates per network**: backends x precisions x threads. ONNX Runtime fp32 and the
   bundle's graph variants (int8 where it has one; fp8 is skipped: ONNX Runtime's CPU provider
   dequantises it), OpenVINO f32, its int8 graphs and bf16 arithmetic where the CPU reports BF16
   (``OPTIMIZATION_CAPABILITIES``; never assumed), at each ``--threads`` count. int8 on a CPU
   without VNNI is measured too (its exact kernels are slower; the factory's warning says so).
3. **Each candidate against ONNX Runtime fp32**, in pairs (at most two copies of a network
   alive: the full-size UNet is 6 GB): the same recorded call, alternated ``ref cand ref cand
   ...`` after a warm-up, the speed ratio is the median of the per-round ratios; the error is
   the relative L2 of the candidate's output against fp32's (``export.variants.output_error``).
4. **The recipe**: per network the fastest candidate whose error is within ``--max-rel-l2``
   (default: the validation bound of int8 graphs, ``export.variants.REL_L2_LIMIT``). The SF-V
   clip with that recipe must stay within ``--min-psnr`` dB of the fp32 clip (same noise); if it
   does not, the network with the largest error falls back to its next candidate with a smaller
   one, and so on.
5. **End to end, one run**: the fp32 ONNX Runtime pipeline and the recipe's, alternated
   (with the fast decoder too where the bundle has one: the fast decoder is the user's choice,
   so the recipe is reported with and without it), per-stage medians, end-to-end ratios, frame
   PSNR.
6. The recipe is written beside the manifest (``recipe.json``, atomically) with the CPU model
   and flags it was chosen on; ``runtime.generate --recipe auto`` runs it (:mod:`engines.recipe`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.machine import describe, load_average, machine_info, usable_cores
from benchmarks.openvino import psnr
from benchmarks.report import write_json_and_markdown
from benchmarks.timing import interleave, summarize, timed
from contract.bundle import Bundle
from contract.cli import run_cli
from contract.environment import x86_without_vnni
from contract.precision import variants
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, expand_dims
from engines.factory import REGISTRY, Choice, create_engines, pipeline_engines
from engines.openvino_engine import device_capabilities, import_openvino
from engines.recipe import RECIPE, read_recipe, recipe_path, this_cpu, write_recipe
from export.calibration import RecordingEngine, synthetic_images
from export.variants import REL_L2_LIMIT, output_error
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)

TIMED_NETWORKS = tuple(n for n in NETWORKS + OPTIONAL_NETWORKS)  # every network with weights
REFERENCE = "onnxruntime:fp32"
SFV = dict(steps=1, min_guidance=1.0, max_guidance=1.0)  # SF-V's one step, no guidance (paper Eq. 6)


def openvino_precisions() -> tuple[list[str], str | None]:
    """OpenVINO's CPU inference precisions here (``fp32``, ``bf16`` where the CPU reports BF16), or why none."""
    try:
        core = import_openvino().Core()
    except Exception as exc:  # not installed: say so in the table, measure the rest
        return [], str(exc).splitlines()[0]
    caps = device_capabilities(core)
    return (["fp32", "bf16"] if "BF16" in caps else ["fp32"]), (None if "BF16" in caps else f"no BF16 ({', '.join(caps)})")


def candidates(bundle: Bundle, network: str, threads: Sequence[int], backends: Sequence[str], precisions: Sequence[str] | None
               ) -> tuple[list[Choice], list[str]]:
    """The choices measured for ``network`` and the ones skipped, with why."""
    have = [p for p in variants(bundle.manifest, network)]
    skipped, found = [], []
    per_backend = {}
    if "onnxruntime" in backends:
        per_backend["onnxruntime"] = [p for p in have if p != "fp8"]
        if "fp8" in have:
            skipped.append("onnxruntime fp8: the CPU provider dequantises float8 (validation only)")
    if "openvino" in backends:
        ov, why = openvino_precisions()
        per_backend["openvino"] = ov + [p for p in have if p == "int8" and ov]
        if why:
            skipped.append(f"openvino {'bf16' if ov else ''}: {why}".replace("  ", " "))
    for name, precs in per_backend.items():
        for p in precs:
            if precisions and p not in precisions:  # ONNX Runtime fp32, the reference, is measured anyway
                continue
            found += [Choice(name, p, t) for t in threads]
    return found, skipped


def record_calls(bundle: Bundle, image, dims: Mapping[str, int], threads: int) -> dict[str, dict[str, np.ndarray]]:
    """Each network's inputs in one fp32 SF-V clip on ONNX Runtime: ``{network: feeds}``."""
    engines = pipeline_engines(bundle, "onnxruntime", threads=threads)
    wrapped = {n: RecordingEngine(getattr(engines, n)) for n in NETWORKS}
    with VideoPipeline(dataclasses.replace(engines, **wrapped)) as pipe:
        pipe(image, **dims, **SFV, seed=0, progress=False)
    calls = {n: wrapped[n].recorded[0] for n in NETWORKS}
    if "vae_decoder_fast" in bundle.networks:  # the same signature: it decodes the same latents
        calls["vae_decoder_fast"] = calls["vae_decoder"]
    return calls


def _engine(bundle: Bundle, network: str, choice: Choice):
    return create_engines(bundle, networks=[network], engines={network: choice}, verify=False)[network].activate()


def measure_network(bundle: Bundle, network: str, feeds: Mapping[str, np.ndarray], choices: Sequence[Choice], rounds: int,
                    ref_threads: int) -> list[dict]:
    """Every choice against ONNX Runtime fp32 on ``feeds``, in pairs, alternated; one row per choice."""
    ref = _engine(bundle, network, Choice("onnxruntime", "fp32", ref_threads))
    want = next(iter(ref.run(feeds).values()))
    rows = []
    for choice in choices:
        try:
            engine = ref if choice == ref_choice(ref_threads) else _engine(bundle, network, choice)
            got = next(iter(engine.run(feeds).values()))  # also the first call's compile / allocation
        except Exception as exc:  # a backend that cannot run this network here: say so, measure the rest
            rows.append({"choice": str(choice), "error": str(exc).splitlines()[0]})
            log.warning("%s %s: %s", network, choice, rows[-1]["error"])
            continue
        err = output_error(got, want)
        # The calls above were each engine's first (compile, allocation): the rounds are timed from the start.
        samples = interleave({"ref": timed(lambda: ref.run(feeds)), "cand": timed(lambda e=engine: e.run(feeds))}, rounds, warmup=0)
        ratio = summarize([a / b for a, b in zip(samples["ref"], samples["cand"])])
        row = {"choice": str(choice), "backend": choice.backend, "precision": choice.precision, "threads": choice.threads,
               "seconds": summarize(samples["cand"]).median, "reference_seconds": summarize(samples["ref"]).median,
               "speedup": ratio.median, "speedup_q": [ratio.q1, ratio.q3], "rel_l2": err["rel_l2"], "max_abs": err["max_abs"],
               "reference": engine is ref}
        rows.append(row)
        log.info("%s %s: %.4f s, %.2fx ORT fp32 (%d threads), rel. L2 %.3g", network, choice, row["seconds"], row["speedup"],
                 ref_threads, row["rel_l2"])
        if engine is not ref:
            engine.deactivate()
            del engine
            gc.collect()
    ref.deactivate()
    del ref
    gc.collect()
    return rows


def ref_choice(threads: int) -> Choice:
    return Choice("onnxruntime", "fp32", threads)


# A candidate replaces ONNX Runtime fp32 only when it is at least this much faster: below it,
# the per-round ratios of ms-long calls on a shared machine are noise.
MIN_GAIN = 1.05


def pick(rows: Sequence[dict], max_rel_l2: float, exclude: Sequence[str] = ()) -> dict | None:
    """The fastest row (largest speed ratio against fp32) within the error bound, not in ``exclude``;
    the reference (ONNX Runtime fp32 at the reference threads, speed ratio 1) unless one gains :data:`MIN_GAIN`."""
    ok = [r for r in rows if "speedup" in r and r["rel_l2"] <= max_rel_l2 and r["choice"] not in exclude]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["speedup"])
    reference = next((r for r in ok if r.get("reference")), None)
    return reference if reference is not None and best["speedup"] < MIN_GAIN else best


def _clip(pipe, image, dims, decoder: str):
    return pipe(image, **dims, **SFV, seed=0, decoder=decoder, progress=False)


def choose_recipe(bundle: Bundle, per_network: Mapping[str, list[dict]], image, dims, ref_threads: int, max_rel_l2: float,
                  min_psnr: float) -> tuple[dict[str, Choice], list[dict]]:
    """Per network the fastest choice within ``max_rel_l2``; then, while the clip's PSNR against
    fp32 is below ``min_psnr``, the network with the largest error takes its next choice."""
    chosen = {n: pick(rows, max_rel_l2) for n, rows in per_network.items()}
    chosen = {n: r for n, r in chosen.items() if r is not None}
    history, excluded = [], {n: [] for n in chosen}
    with VideoPipeline.from_bundle(bundle.root, "onnxruntime", threads=ref_threads) as ref:
        want = _clip(ref, image, dims, "full").frames
    while True:
        engines = {n: Choice.of(r["choice"]) for n, r in chosen.items()}
        with VideoPipeline.from_bundle(bundle.root, "onnxruntime", threads=ref_threads, engines=engines) as pipe:
            value = psnr(_clip(pipe, image, dims, "full").frames, want)
        history.append({"engines": {n: str(c) for n, c in engines.items()}, "psnr_db": value})
        log.info("recipe %s: SF-V frames %.1f dB against fp32", ", ".join(f"{n}={c}" for n, c in engines.items()), value)
        if value >= min_psnr:
            return engines, history
        lossy = [n for n in chosen if chosen[n]["rel_l2"] > 0 and n != "vae_decoder_fast"]
        if not lossy:
            raise BenchmarkError(f"the fp32 engines give {value:.1f} dB < {min_psnr} dB against fp32: the engines are not deterministic")
        worst = max(lossy, key=lambda n: chosen[n]["rel_l2"])
        excluded[worst].append(chosen[worst]["choice"])
        fallback = pick([r for r in per_network[worst] if r["rel_l2"] < chosen[worst]["rel_l2"]], max_rel_l2, excluded[worst])
        chosen[worst] = fallback or next(r for r in per_network[worst] if r["choice"] == str(ref_choice(ref_threads)))


def end_to_end(bundle: Bundle, recipe: Mapping[str, Choice], image, dims, ref_threads: int, rounds: int, warmup: int = 1) -> dict:
    """fp32 ONNX Runtime and the recipe, alternated in one run (and each with the fast decoder where
    the bundle has one): per-stage medians, end-to-end ratios against fp32 with SVD's decoder, PSNR."""
    fast = "vae_decoder_fast" in bundle.networks
    pipes = {"fp32": VideoPipeline.from_bundle(bundle.root, "onnxruntime", threads=ref_threads),
             "recipe": VideoPipeline.from_bundle(bundle.root, "onnxruntime", threads=ref_threads, engines=recipe)}
    runs = [(p, d) for d in (("full", "fast") if fast else ("full",)) for p in pipes]
    frames = {}

    def sampler(p, d):
        def run():
            result = _clip(pipes[p], image, dims, d)
            frames[(p, d)] = result.frames
            return dict(result.timings)
        return run

    try:
        for pipe in pipes.values():
            pipe.__enter__()
        samples = interleave({f"{p}/{d}": sampler(p, d) for p, d in runs}, rounds, warmup=warmup)
    finally:
        for pipe in pipes.values():
            pipe.close()
    stages = [s for s in ("preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder", "total")]
    out = {"rounds": rounds, "warmup": warmup, "configs": {}}
    for key, values in samples.items():
        out["configs"][key] = {s: summarize([v[s] for v in values if s in v]).median for s in stages if s in values[0]}
    base = samples["fp32/full"]
    for key, values in samples.items():
        if key != "fp32/full":
            r = summarize([a["total"] / b["total"] for a, b in zip(base, values)])
            out["configs"][key]["speedup_vs_fp32_full"] = r.median
            out["configs"][key]["speedup_q"] = [r.q1, r.q3]
    out["psnr_db"] = {"recipe/full vs fp32/full": psnr(frames[("recipe", "full")], frames[("fp32", "full")])}
    if fast:  # the other networks' effect: the fast decoder's own quality is reported separately
        out["psnr_db"]["recipe/fast vs fp32/fast"] = psnr(frames[("recipe", "fast")], frames[("fp32", "fast")])
        out["psnr_db"]["fp32/fast vs fp32/full (the fast decoder's own)"] = psnr(frames[("fp32", "fast")], frames[("fp32", "full")])
    return out


def run(bundle_dir, *, frames: int | None = None, height: int = 128, width: int = 128, threads: Sequence[int] = (),
        rounds: int = 3, e2e_rounds: int = 3, warmup: int = 1, max_rel_l2: float = REL_L2_LIMIT["int8"], min_psnr: float = 30.0,
        backends: Sequence[str] = ("onnxruntime", "openvino"), precisions: Sequence[str] | None = None,
        networks: Sequence[str] | None = None, write: bool = True) -> dict:
    """Measure, choose, check end to end and (``write``) store the recipe; return everything measured."""
    bundle = Bundle.load(bundle_dir)
    unknown = [b for b in backends if b not in REGISTRY or b in ("torch", "tensorrt")]
    if unknown:
        raise BenchmarkError(f"--backends {','.join(unknown)}: a CPU recipe chooses among onnxruntime, openvino")
    threads = sorted(set(threads or {1, min(2, usable_cores())}))
    ref_threads = max(threads)
    machine = machine_info(ref_threads)
    old = recipe_path(bundle.root)
    if old.is_file():
        try:
            cpu = read_recipe(old)["cpu"]
            if cpu != this_cpu():
                log.warning("%s was chosen on another CPU (%s); re-measuring on this one (%s)", old, cpu.get("model"), this_cpu()["model"])
        except Exception as exc:  # an unreadable recipe is replaced
            log.warning("%s: %s; measuring a new one", old, exc)
    dims = {"num_frames": frames or bundle.config.num_frames, "height": height, "width": width}
    image = synthetic_images(11, height, width, seed=1)[-1]  # not a calibration image
    if x86_without_vnni():
        log.warning("this CPU has no VNNI: int8 candidates run ONNX Runtime's exact but slower u8u8 kernels")
    log.info("recording each network's inputs in one fp32 SF-V clip (%s)", dims)
    calls = record_calls(bundle, image, dims, ref_threads)
    result = {"benchmark": "recipe", "machine": machine, "cpu": this_cpu(), "bundle": str(bundle.root), "dims": dims,
              "threads": threads, "max_rel_l2": max_rel_l2, "min_psnr_db": min_psnr, "networks": {}, "skipped": {}}
    for network in networks or [n for n in TIMED_NETWORKS if n in bundle.networks]:
        choices, skipped = candidates(bundle, network, threads, backends, precisions)
        choices = [ref_choice(ref_threads)] + [c for c in choices if c != ref_choice(ref_threads)]  # the fallback, always
        result["skipped"][network] = skipped
        result["networks"][network] = measure_network(bundle, network, calls[network], choices, rounds, ref_threads)
    del calls
    gc.collect()
    recipe, history = choose_recipe(bundle, result["networks"], image, dims, ref_threads, max_rel_l2, min_psnr)
    result["recipe"] = {n: str(c) for n, c in recipe.items()}
    result["quality_steps"] = history
    result["end_to_end"] = end_to_end(bundle, recipe, image, dims, ref_threads, e2e_rounds, warmup) if e2e_rounds else None
    result["load_after"] = load_average()
    if write:
        summary = {"dims": dims, "threads": threads, "max_rel_l2": max_rel_l2, "min_psnr_db": min_psnr,
                   "date": machine["date"], "load_average": machine["load_average"], "end_to_end": result["end_to_end"],
                   "candidates": result["networks"]}
        result["written"] = str(write_recipe(bundle.root, recipe, summary))
    return result


def per_stage(bundle_dir, networks: Sequence[str], *, frames: int, height: int, width: int, decode_chunk: int | None = None,
              rounds: int = 2) -> dict:
    """The bundle's recipe against ONNX Runtime fp32, one network at a time, on seeded sample inputs at a
    size the whole pipeline may not fit (e.g. 576x1024): one call per stage as the pipeline makes it
    (the decoders take ``decode_chunk`` frames per call; the clip takes ``frames / decode_chunk`` calls)."""
    bundle = Bundle.load(bundle_dir)
    doc = read_recipe(recipe_path(bundle.root))
    if doc["cpu"] != this_cpu():
        raise BenchmarkError(f"{recipe_path(bundle.root)} was chosen on another CPU ({doc['cpu'].get('model')}); "
                             "measure one here first: python -m benchmarks.recipe --bundle BUNDLE")
    ref_threads = max((doc.get("measured") or {}).get("threads") or [min(2, usable_cores())])
    result = {"benchmark": "recipe-per-stage", "machine": machine_info(ref_threads), "bundle": str(bundle.root),
              "dims": {"frames": frames, "height": height, "width": width, "decode_chunk": decode_chunk}, "networks": {}}
    for network in networks:
        chunk = decode_chunk if network.startswith("vae_decoder") and decode_chunk else frames
        dims = expand_dims({"batch": 1, "frames": chunk, "height": height, "width": width}, bundle.config)
        feeds = {k: np.asarray(v, dtype=np.float32) for k, v in bundle.spec(network).sample_inputs(dims, bundle.config).items()}
        choice = doc["engines"].get(network, ref_choice(ref_threads))
        choices = [choice]  # timed against the reference in pairs (the reference alone where the recipe keeps it)
        rows = measure_network(bundle, network, feeds, choices, rounds, ref_threads)
        calls = -(-frames // chunk) if network.startswith("vae_decoder") else 1
        for r in rows:
            r["calls_per_clip"] = calls
        result["networks"][network] = rows
        gc.collect()
    result["load_after"] = load_average()
    return result


def format_per_stage(result: dict) -> str:
    d = result["dims"]
    lines = [f"Machine: {describe(result['machine'])}; load after {result.get('load_after')}",
             f"Per stage at {d['frames']} frames, {d['height']}x{d['width']} px (decoders: {d['decode_chunk'] or d['frames']} "
             "frames per call), recipe engine vs ONNX Runtime fp32, alternated",
             "", "| network | recipe engine | calls per clip | ORT fp32 s per call | recipe s per call | recipe s per clip "
             "| speed vs ORT fp32 | rel. L2 vs fp32 |", "|---|---|---|---|---|---|---|---|"]
    for network, rows in result["networks"].items():
        for r in rows:
            if "error" in r:
                lines.append(f"| {network} | {r['choice']} | | | failed: {r['error']} | | | |")
                continue
            lines.append(f"| {network} | {r['choice']} | {r['calls_per_clip']} | {r['reference_seconds']:.3f} | {r['seconds']:.3f} | "
                         f"{r['seconds'] * r['calls_per_clip']:.2f} | {r['speedup']:.2f}x | {r['rel_l2']:.3g} |")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    lines = [f"Machine: {describe(result['machine'])}; load after {result.get('load_after')}",
             f"SF-V clip {result['dims']}, candidates against ONNX Runtime fp32 at {max(result['threads'])} threads "
             f"(alternated in pairs, medians of per-round ratios); bound rel. L2 <= {result['max_rel_l2']}",
             "", "| network | engine | seconds | speed vs ORT fp32 | rel. L2 vs fp32 | chosen |", "|---|---|---|---|---|---|"]
    for network, rows in result["networks"].items():
        for r in rows:
            if "error" in r:
                lines.append(f"| {network} | {r['choice']} | - | failed: {r['error']} | - | |")
                continue
            mark = "**yes**" if result["recipe"].get(network) == r["choice"] else ""
            lines.append(f"| {network} | {r['choice']} | {r['seconds']:.4f} | {r['speedup']:.2f}x "
                         f"[{r['speedup_q'][0]:.2f}-{r['speedup_q'][1]:.2f}] | {r['rel_l2']:.3g} | {mark} |")
        for why in result["skipped"].get(network, []):
            lines.append(f"| {network} | {why} | | | | skipped |")
    e2e = result["end_to_end"]
    if e2e is None:
        return "\n".join(lines + ["", "Recipe: " + ",".join(f"{n}={c}" for n, c in result["recipe"].items())])
    lines += ["", f"End to end, one run, {e2e['rounds']} alternated rounds after {e2e.get('warmup', 1)} warm-up (median seconds per stage):", "",
              "| configuration | CLIP | VAE enc. | UNet | decoder | total | vs fp32 ORT (SVD decoder) |", "|---|---|---|---|---|---|---|"]
    for key, c in e2e["configs"].items():
        ratio = f"{c['speedup_vs_fp32_full']:.2f}x" if "speedup_vs_fp32_full" in c else "1.00x"
        lines.append(f"| {key} | {c.get('image_encoder', 0):.3f} | {c.get('vae_encoder', 0):.3f} | {c.get('unet', 0):.3f} | "
                     f"{c.get('vae_decoder', 0):.3f} | {c['total']:.3f} | {ratio} |")
    lines += ["", "Frame PSNR: " + "; ".join(f"{k}: {v:.1f} dB" for k, v in e2e["psnr_db"].items())]
    lines += ["", "Recipe: " + ",".join(f"{n}={c}" for n, c in result["recipe"].items())]
    if result.get("written"):
        lines.append(f"written to {result['written']} (runtime.generate --recipe auto)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.recipe",
        description="Measure each network's engines (backends x precisions x threads) on this CPU against ONNX Runtime fp32, "
                    "pick the fastest within the quality bound, run the SF-V clip end to end against fp32 and write the "
                    f"recipe beside the bundle's manifest ({RECIPE}).",
        epilog="examples:\n"
               "  python -m benchmarks.recipe --bundle out/tiny --frames 14 --height 64 --width 64\n"
               "  python -m benchmarks.recipe --bundle out/full --threads 2 --precisions int8,bf16 --out results/recipe\n"
               "  python -m benchmarks.recipe --bundle out/full --per-stage --height 576 --width 1024 --decode-chunk 2 \\\n"
               "      --networks vae_encoder vae_decoder vae_decoder_fast --rounds 2\n"
               "  python -m runtime.generate --bundle out/full --recipe auto --image cat.png --out clip.mp4 --steps 1 --max-guidance 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="exported bundle (its variants and fast decoder are candidates)")
    p.add_argument("--frames", type=int, help="frames (default: the model's)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--threads", help="comma-separated thread counts to try (default: 1 and 2, capped at the usable cores)")
    p.add_argument("--backends", default="onnxruntime,openvino", help="default onnxruntime,openvino (those installed)")
    p.add_argument("--precisions", help="candidate precisions besides fp32, e.g. int8,bf16 (default: every one available)")
    p.add_argument("--networks", nargs="+", help="networks to measure (default: all; the others run ORT fp32)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds per candidate pair (default 3, after a warm-up)")
    p.add_argument("--e2e-rounds", type=int, default=3, help="alternated end-to-end rounds (default 3, after a warm-up; 0: skip the end-to-end run)")
    p.add_argument("--warmup", type=int, default=1, help="untimed end-to-end rounds first (default 1; engines are "
                                                          "created and compiled before it either way)")
    p.add_argument("--max-rel-l2", type=float, default=REL_L2_LIMIT["int8"],
                   help="largest relative L2 error of a network's output against fp32 (default %(default)s: the int8 validation bound)")
    p.add_argument("--min-psnr", type=float, default=30.0, help="SF-V frames against fp32, dB (default 30)")
    p.add_argument("--per-stage", action="store_true",
                   help="time the bundle's recipe against ONNX Runtime fp32 network by network on sample inputs (for sizes "
                        "the whole clip does not fit, e.g. --height 576 --width 1024); needs --networks and a recipe")
    p.add_argument("--decode-chunk", type=int, help="with --per-stage: frames per decoder call (default: all)")
    p.add_argument("--no-write", action="store_true", help=f"measure only; do not write {RECIPE}")
    p.add_argument("--out", help="also write recipe.json (the full result) and recipe.md here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 1 or args.e2e_rounds < 0:
        raise BenchmarkError("--rounds must be >= 1 and --e2e-rounds >= 0")
    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else []
    except ValueError:
        raise BenchmarkError(f"--threads {args.threads!r}: comma-separated integers, e.g. 1,2") from None
    if any(t < 1 for t in threads):
        raise BenchmarkError("--threads: each count must be >= 1")
    if args.per_stage:
        if not args.networks:
            raise BenchmarkError("--per-stage needs --networks, e.g. --networks vae_encoder vae_decoder vae_decoder_fast")
        result = per_stage(args.bundle, args.networks, frames=args.frames or Bundle.load(args.bundle).config.num_frames,
                           height=args.height, width=args.width, decode_chunk=args.decode_chunk, rounds=args.rounds)
        text = format_per_stage(result)
        print(text)
        if args.out:
            write_json_and_markdown(args.out, "per-stage", json.loads(json.dumps(result, default=float)), text)
        return 0
    result = run(args.bundle, frames=args.frames, height=args.height, width=args.width, threads=threads, rounds=args.rounds,
                 e2e_rounds=args.e2e_rounds, warmup=args.warmup, max_rel_l2=args.max_rel_l2, min_psnr=args.min_psnr,
                 backends=[b.strip() for b in args.backends.split(",") if b.strip()],
                 precisions=[p.strip() for p in args.precisions.split(",")] if args.precisions else None,
                 networks=args.networks, write=not args.no_write)
    text = format_table(result)
    print(text)
    if args.out:
        write_json_and_markdown(args.out, "recipe", json.loads(json.dumps(result, default=float)), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
