"""``python -m export.trt``: build one strongly typed TensorRT engine per network of a bundle.

    python -m export.trt --bundle out/svd --fp16
    python -m export.trt --bundle out/svd --int8                        # int8 UNet, fp16 elsewhere
    python -m export.trt --model tiny --out out/tiny --fp16          # export the bundle first
    python -m export.trt --bundle out/svd --fp8 --networks unet --frames 14:14:25 --batch 1:1:1

Precision lives in the graph: ``--fp16`` / ``--int8`` / ``--fp8`` build each network from the
bundle's graph variant of that precision (``unet.fp16.onnx``, ``unet.int8.onnx``, ...; see
:mod:`contract.precision`), exporting the variant first when the bundle lacks it. A network
without an int8/fp8 variant (by default all but the UNet) is built from its fp16 graph. The
network is strongly typed (TensorRT >= 10.12; 11.x has nothing else) and the builder gets no
precision flag.

For each network: the optimization profile comes from the network spec and the ranges
(:mod:`contract.trt_profiles`), the engine's cache key from the variant's sha256, TensorRT
version, GPU, precision and profile (:mod:`engines.trt_cache`). A recorded engine with the same
key is reused; otherwise the engine is built with Polygraphy (:mod:`export.trt_build`), written
atomically as ``<network>.<precision>.plan`` and recorded in ``manifest.json``::

    "engines": {"unet": {"file": "unet.int8.plan", "sha256": ..., "precision": "int8",
                          "onnx_file": "unet.int8.onnx", "cache_key": {...}, "profile": {...}, "build": {...}}}

Without TensorRT (>= 10.12) or an NVIDIA GPU the command stops before writing anything, saying
what is missing and how to install it.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from polygraphy.exception import PolygraphyException

from contract.atomic import atomic_path
from contract.bundle import MANIFEST, Bundle, sha256_file
from contract.cli import run_cli
from contract.environment import TENSORRT_REQUIREMENT
from contract.errors import BundleError, ToolkitError
from contract.precision import DEFAULT_NETWORKS, TRT_FALLBACK, missing_variants, resolve
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, NetworkSpec
from contract.trt_profiles import ProfileRanges, network_profile, parse_range, resolve_ranges
from engines.trt_cache import CacheDecision, MachineInfo, cache_key, detect_machine, lookup, require_gpu_and_tensorrt
from export.calibration import parse_calibration_size
from export.onnx import export_bundle
from export.trt_build import BuildOptions, engine_loader, save_plan
from export.variants import add_variants
from networks.models import load_model

log = logging.getLogger(__name__)

# The networks TensorRT builds: the four, and the fast decoder where the bundle has one (the
# pre-processing graphs stay on ONNX Runtime).
ENGINE_NETWORKS = NETWORKS + OPTIONAL_NETWORKS


class EngineBuildError(ToolkitError):
    """TensorRT could not build an engine (out of memory, unsupported layer, failed constraint)."""


@dataclass
class EngineJob:
    """Everything known about one network's engine before building it."""

    network: str
    spec: NetworkSpec
    onnx_path: Path  # the graph variant built from
    precision: str  # the variant's precision: "fp32" | "fp16" | "int8" | "fp8"
    profile: dict  # {input: {"min", "opt", "max"}}
    key: dict  # the cache key this engine is built with
    plan_file: str  # "<network>.<precision>.plan", relative to the bundle
    decision: CacheDecision


def onnx_digest(root: Path, entry: dict, network: str) -> str:
    """sha256 identifying one graph variant and its weights.

    ``entry`` is the variant's manifest entry; its sha256 covers the ``.onnx`` file. When the
    weights live in an external data file (graphs above 2 GB) the digest also covers that file,
    since another set of weights with the same graph leaves the ``.onnx`` unchanged.
    """
    path = root / entry["file"]
    if not path.is_file():
        raise BundleError(f"bundle {root}: {entry['file']} ({network}) is missing; re-export the bundle")
    digest = sha256_file(path)
    if entry.get("sha256") and digest != entry["sha256"]:
        raise BundleError(f"{path} does not match the sha256 in the manifest (changed or corrupt); re-export the bundle")
    data = entry.get("external_data")
    if data:
        data_path = root / data
        if not data_path.is_file():
            raise BundleError(f"bundle {root}: {data} (external data of {network}) is missing; re-export the bundle")
        digest = hashlib.sha256(f"{digest}:{sha256_file(data_path)}".encode()).hexdigest()
    return digest


def plan_job(bundle: Bundle, network: str, ranges: ProfileRanges, options: BuildOptions, machine: MachineInfo) -> EngineJob:
    """What building ``network`` means here: graph variant, profile, cache key, reuse or build."""
    spec = bundle.spec(network)
    precision, variant = resolve(bundle, network, options.precision, TRT_FALLBACK)
    profile = network_profile(spec, bundle.config, ranges)
    key = cache_key(onnx_digest(bundle.root, variant, network), machine, precision, profile)
    entry = bundle.manifest.get("engines", {}).get(network)
    decision = lookup(bundle.root, entry, key)
    if options.force:
        decision = CacheDecision(False, "--force")
    return EngineJob(
        network=network,
        spec=spec,
        onnx_path=bundle.root / variant["file"],
        precision=precision,
        profile=profile,
        key=key,
        plan_file=f"{network}.{precision}.plan",
        decision=decision,
    )


def record_engine(bundle: Bundle, job: EngineJob, ranges: ProfileRanges, options: BuildOptions, seconds: float) -> dict:
    """Add the built engine to the manifest (saved atomically); remove a replaced plan file."""
    engines = bundle.manifest.setdefault("engines", {})
    old = engines.get(job.network) or {}
    entry = {
        "network": job.network,
        "backend": "tensorrt",
        "file": job.plan_file,
        "sha256": sha256_file(bundle.root / job.plan_file),
        "bytes": (bundle.root / job.plan_file).stat().st_size,
        "precision": job.precision,
        "onnx_file": job.onnx_path.name,
        "cache_key": job.key,
        "profile": {"ranges": ranges.to_json(), "inputs": job.profile},
        "build": {
            "seconds": round(seconds, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "builder_optimization_level": options.builder_optimization_level,
            "workspace_gib": options.workspace_gib,
        },
    }
    engines[job.network] = entry
    bundle.save()
    stale = old.get("file")
    if stale and stale != job.plan_file and (bundle.root / stale).is_file():
        (bundle.root / stale).unlink()
    return entry


def build_job(bundle: Bundle, job: EngineJob, ranges: ProfileRanges, options: BuildOptions) -> dict:
    """Build one engine with Polygraphy, write it and its timing cache atomically, record it."""
    final = bundle.root / job.plan_file
    t0 = time.perf_counter()
    with atomic_path(final) as tmp_plan:
        cache = options.timing_cache
        try:
            if cache is not None:
                # Polygraphy merges into the file it saves to: start from the existing cache.
                with atomic_path(cache) as tmp_cache:
                    if Path(cache).is_file():
                        shutil.copyfile(cache, tmp_cache)
                    try:
                        save_plan(engine_loader(job.onnx_path, job.profile, options, tmp_cache), tmp_plan)
                    finally:
                        # Polygraphy locks the file it saves through "<file>.lock"; this one is private.
                        Path(f"{tmp_cache}.lock").unlink(missing_ok=True)
            else:
                save_plan(engine_loader(job.onnx_path, job.profile, options), tmp_plan)
        except PolygraphyException as exc:  # how Polygraphy reports a failed parse or build
            raise EngineBuildError(
                f"TensorRT could not build the {job.network} engine ({exc}). If it ran out of memory, narrow the "
                f"profile (--frames/--height/--width/--batch) or lower --workspace; a graph TensorRT cannot parse "
                f"needs a newer TensorRT ({TENSORRT_REQUIREMENT})"
            ) from None
        finally:
            gc.collect()
    seconds = time.perf_counter() - t0
    return record_engine(bundle, job, ranges, options, seconds)


def build_engines(
    bundle: Bundle,
    networks: Iterable[str] | None,
    ranges: ProfileRanges,
    options: BuildOptions,
    machine: MachineInfo | None = None,
) -> dict[str, str]:
    """Build (or reuse) the engines of ``networks``; return ``{network: "built" | "reused"}``."""
    machine = machine or detect_machine()
    result = {}
    for network in networks or [n for n in bundle.networks if n in ENGINE_NETWORKS]:
        job = plan_job(bundle, network, ranges, options, machine)
        if job.decision.reuse:
            log.info("%s: reusing %s (%s)", network, job.plan_file, job.decision.reason)
            result[network] = "reused"
            continue
        log.info("%s: building %s from %s (%s); profile %s", network, job.plan_file, job.onnx_path.name, job.decision.reason, job.profile)
        entry = build_job(bundle, job, ranges, options)
        log.info("%s: built in %.1f s, %.1f MB", network, entry["build"]["seconds"], entry["bytes"] / 1e6)
        result[network] = "built"
    return result


def ensure_variants(bundle: Bundle, networks: Sequence[str], precision: str, calibration_size: dict | None = None) -> None:
    """Export the graph variants a ``precision`` build needs and the bundle lacks: the
    precision's own (int8/fp8: the UNet) and, for int8/fp8, fp16 for the other networks."""
    todo = {precision: missing_variants(bundle, precision, networks)} if precision != "fp32" else {}
    if precision in ("int8", "fp8"):
        rest = [n for n in networks if n not in DEFAULT_NETWORKS[precision]]
        todo["fp16"] = missing_variants(bundle, "fp16", rest)
    todo = {p: ns for p, ns in todo.items() if ns}
    if not todo:
        return

    for p, ns in todo.items():
        log.info("exporting the %s graph(s) of %s first", p, ", ".join(ns))
        add_variants(bundle, [p], ns, calibration_size=calibration_size)


# --------------------------------------------------------------------------- CLI


def _range_arg(name: str):
    def parse(text: str):
        try:
            return parse_range(text, name)
        except ToolkitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.trt",
        description=(
            "Build strongly typed TensorRT engines (one per network) from a bundle's graph variants and record them "
            "in its manifest. Needs an NVIDIA GPU with its driver, a CUDA build of torch and TensorRT "
            f"({TENSORRT_REQUIREMENT}: pip install '.[gpu]'). The precision comes from the graph: --fp16/--int8/--fp8 "
            "pick the bundle's <network>.<precision>.onnx (exported first if missing; networks without an int8/fp8 "
            "graph use their fp16 graph)."
        ),
        epilog=(
            "examples:\n"
            "  python -m export.trt --bundle out/svd --fp16\n"
            "  python -m export.trt --bundle out/svd --int8 --networks unet          # calibrates unet.int8.onnx if missing\n"
            "  python -m export.trt --model tiny --out out/tiny --fp16              # export the bundle first\n"
            "  python -m export.trt --bundle out/svd --fp8 --networks unet --frames 14:14:25 --batch 1:1:1   # Hopper+\n"
            "  python -m runtime.generate --bundle out/svd --backend tensorrt --image cat.png --out clip.mp4 --steps 1 --max-guidance 1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", "--out", dest="bundle", required=True, help="bundle directory (from python -m export.onnx)")
    p.add_argument("--model", help="if the bundle does not exist yet: export it first from this model (DIR, tiny, svd-random)")
    p.add_argument("--unet", help="with --model: a UNet directory replacing the model's (e.g. a trained SF-V UNet)")
    p.add_argument("--opset", type=int, default=17, help="with --model: ONNX opset of the export (default 17)")
    precision = p.add_mutually_exclusive_group()
    for name, text in (
        ("fp32", "fp32 engines from <network>.onnx (the default)"),
        ("fp16", "engines from the fp16 graphs (fp16 with the fragile ops, e.g. VAE norms, kept fp32 in the graph)"),
        ("int8", "int8 Q/DQ UNet (<network>.int8.onnx), fp16 for the networks without an int8 graph"),
        ("fp8", "fp8 (e4m3) Q/DQ UNet for Hopper and newer GPUs, fp16 for the other networks"),
    ):
        precision.add_argument(f"--{name}", dest="precision", action="store_const", const=name, help=text)
    p.add_argument("--calibration-size", metavar="HxW[xF]",
                   help="with --int8/--fp8 and no quantized graph yet: pixel size (and frames) of the pipeline runs whose "
                        "UNet inputs calibrate it (default: the model's default size)")
    p.add_argument("--networks", nargs="+", choices=ENGINE_NETWORKS, help="networks to build (default: all in the bundle)")
    p.add_argument("--batch", type=_range_arg("batch"), help="videos per call MIN:OPT:MAX (default 1:1:1; UNet max doubled for CFG)")
    p.add_argument("--cfg", action="store_true", help="optimise the UNet for the CFG-doubled batch (multi-step SVD)")
    p.add_argument("--frames", type=_range_arg("frames"), help="frames per video MIN:OPT:MAX (default 1:F:max(F,25))")
    p.add_argument("--decode-chunk", type=_range_arg("decode_chunk"), help="frames per decoder call MIN:OPT:MAX (default follows --frames)")
    p.add_argument("--height", type=_range_arg("height"), help="pixels MIN:OPT:MAX (default 256:576:1024 for SVD)")
    p.add_argument("--width", type=_range_arg("width"), help="pixels MIN:OPT:MAX (default 256:1024:1024 for SVD)")
    p.add_argument("--timing-cache", type=Path, help="tactic timing cache file to load and update")
    p.add_argument("--workspace", type=float, metavar="GIB", help="builder workspace limit in GiB (default: TensorRT's)")
    p.add_argument("--builder-optimization-level", type=int, choices=range(6), metavar="{0..5}", help="TensorRT builder optimization level (default 3)")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached engine matches")
    return p


def _overrides(args) -> dict:
    return {
        "batch": args.batch,
        "frames": args.frames,
        "decode_chunk": args.decode_chunk,
        "height": args.height,
        "width": args.width,
        "cfg": args.cfg or None,
    }


def _check_options(args) -> BuildOptions:
    if args.workspace is not None and not args.workspace > 0:
        raise ToolkitError(f"--workspace {args.workspace}: give a positive size in GiB, e.g. --workspace 8")
    if args.timing_cache is not None and args.timing_cache.is_dir():
        raise ToolkitError(f"--timing-cache {args.timing_cache} is a directory; pass a file path")
    return BuildOptions(
        precision=args.precision or "fp32",
        workspace_gib=args.workspace,
        builder_optimization_level=args.builder_optimization_level,
        timing_cache=args.timing_cache,
        force=args.force,
    )


def _check_networks(bundle_networks: Sequence[str], wanted: Sequence[str] | None, root: Path) -> list[str]:
    if not bundle_networks:
        raise BundleError(f"bundle {root} holds no networks yet; export them with `python -m export.onnx --out {root}`")
    if not wanted:
        return list(bundle_networks)
    absent = [n for n in wanted if n not in bundle_networks]
    if absent:
        raise BundleError(
            f"bundle {root} has no {', '.join(absent)} (it has {', '.join(bundle_networks) or 'none'}); "
            f"export it with `python -m export.onnx --out {root} --networks {' '.join(absent)}`"
        )
    return [n for n in ENGINE_NETWORKS if n in wanted]


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = _check_options(args)

    calibration_size = parse_calibration_size(args.calibration_size)
    root = Path(args.bundle)
    exists = (root / MANIFEST).is_file()

    # 1. Everything checkable without a GPU, before anything is written.
    if exists:
        bundle = Bundle.load(root)
        ranges = resolve_ranges(bundle.config, _overrides(args))
        networks = _check_networks([n for n in bundle.networks if n in ENGINE_NETWORKS], args.networks, root)
        if args.model is not None:
            log.info("%s already holds a bundle: building from it, not re-exporting --model (re-export with python -m export.onnx)", root)
    elif args.model is None:
        raise BundleError(
            f"{root} is not a bundle (no {MANIFEST}); export one with `python -m export.onnx --out {root}`, "
            f"or pass --model DIR|tiny to export it in this run"
        )

    # 2. TensorRT and a GPU: fail here, having written nothing.
    require_gpu_and_tensorrt()
    machine = detect_machine()
    log.info("TensorRT %s on %s (compute capability %s)", machine.tensorrt_version, machine.gpu_name, machine.compute_capability)

    # 3. Export the bundle when asked to.
    if not exists:
        model = load_model(args.model, unet=args.unet)
        ranges = resolve_ranges(model.config, _overrides(args))
        bundle = export_bundle(model, root, networks=args.networks, opset=args.opset)
        del model
        gc.collect()
        networks = _check_networks([n for n in bundle.networks if n in ENGINE_NETWORKS], args.networks, root)

    # 4. The graph variants the engines are built from, exported where the bundle lacks them.
    ensure_variants(bundle, networks, options.precision, calibration_size)

    # 5. Build or reuse.
    result = build_engines(bundle, networks, ranges, options, machine)
    for network, what in result.items():
        entry = bundle.manifest["engines"][network]
        print(f"{network}: {what} {root / entry['file']} ({entry['precision']}, from {entry['onnx_file']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
