"""Write a bundle's precision variants: convert each fp32 graph, validate it against the fp32 graph
in ONNX Runtime, move it into the bundle and record it in the manifest (see :mod:`contract.precision`).

    add_variants(bundle, ["fp16", "int8"])            # fp16 for every network, int8 for the UNet

Validation compares the variant with the fp32 graph on the same inputs (not with PyTorch: the
variant's error is what precision costs on top of the export):

- ``max_abs`` = max |variant - fp32|, ``max_rel`` = max_abs / max |fp32|;
- ``rel_l2`` = ||variant - fp32||_2 / ||fp32||_2, the error of the whole output.

Inputs: the spec's seeded sample inputs at the bundle's sample dims for fp16; for int8/fp8 the
held-out part of the UNet inputs captured from the pipeline's own calls (a quantized graph is
only meaningful on the value ranges it was calibrated for). A variant passes when its outputs
are finite and ``rel_l2 <= REL_L2_LIMIT[precision]``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.atomic import usual_permissions
from contract.bundle import Bundle, sha256_file
from contract.cli import run_cli
from contract.errors import BundleError, ShapeError, ValidationError
from contract.precision import DEFAULT_NETWORKS, PRECISIONS, check_precision, parse_precisions, variant_file, variants
from contract.specs import expand_dims
from engines.ort_engine import cpu_session_options
from export.calibration import Calibration, capture_calibration, parse_calibration_size

log = logging.getLogger(__name__)

# Relative L2 error vs the fp32 graph a variant may have (measured values: docs/precision.md).
REL_L2_LIMIT = {"fp16": 1e-2, "int8": 0.15, "fp8": 0.4}
EXTERNAL_DATA_BYTES = 1_800_000_000


def output_error(got: np.ndarray, want: np.ndarray) -> dict:
    """``max_abs``, ``max_rel`` and ``rel_l2`` of ``got`` against ``want`` (float64 sums)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if not np.isfinite(got).all():
        return {"max_abs": float("inf"), "max_rel": float("inf"), "rel_l2": float("inf")}
    diff = got - want
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    norm = float(np.linalg.norm(want))
    return {
        "max_abs": max_abs,
        "max_rel": max_abs / scale if scale > 0 else max_abs,
        "rel_l2": float(np.linalg.norm(diff)) / norm if norm > 0 else float(np.linalg.norm(diff)),
    }


def _session(path: str | os.PathLike, threads: int | None = None):
    return ort.InferenceSession(str(path), cpu_session_options(threads, quiet=True), providers=["CPUExecutionProvider"])


def validate_against_fp32(
    variant_path: str | os.PathLike,
    fp32_path: str | os.PathLike,
    output_name: str,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    precision: str,
    threads: int | None = None,
) -> list[dict]:
    """Run both graphs on every feed; one result per feed (the manifest's ``validation``).

    The sessions run one after the other so that a full-size network is in memory once.
    """
    reference = _session(fp32_path, threads)
    wants = [reference.run([output_name], dict(feeds))[0] for feeds in feeds_list]
    del reference
    gc.collect()
    session = _session(variant_path, threads)
    results = []
    for feeds, want in zip(feeds_list, wants):
        (got,) = session.run([output_name], dict(feeds))
        err = output_error(got, want)
        limit = REL_L2_LIMIT[precision]
        results.append(
            {
                "dims": {k: list(v.shape) for k, v in feeds.items()},
                **err,
                "reference": "fp32",
                "rel_l2_limit": limit,
                "passed": bool(np.isfinite(err["rel_l2"]) and err["rel_l2"] <= limit),
            }
        )
    return results


def sample_feeds(bundle: Bundle, network: str) -> list[dict[str, np.ndarray]]:
    """Seeded sample inputs of ``network`` at the bundle's export sample dims (fp16 validation)."""
    # optional: torch (the export extra)
    from export.validate import used_dims

    spec = bundle.spec(network)
    dims = bundle.manifest.get("export", {}).get("sample_dims") or {"batch": 1, "frames": 3, "height": 64, "width": 64}
    used = expand_dims(used_dims(spec, dims), bundle.config)
    inputs = spec.sample_inputs(used, bundle.config)
    return [{k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}]


def _convert(bundle: Bundle, network: str, precision: str, out_path: Path, calibration) -> tuple[list[str], int, bool]:
    """Write ``network``'s ``precision`` graph to ``out_path``; return (fp32 op types, nodes, external)."""
    # optional: onnx (the export extra)
    import onnx

    fp32_entry = variants(bundle.manifest, network)["fp32"]
    src = bundle.root / fp32_entry["file"]
    external = bool(fp32_entry.get("external_data"))
    if precision == "fp16":
        # optional: onnx (the export extra)
        from export.fp16 import to_fp16

        model = onnx.load(str(src))
        model, fp32_ops = to_fp16(model, bundle.spec(network).fp32_op_types)
        nodes = len(model.graph.node)
        # fp16 halves the weights: one protobuf unless they still exceed the limit.
        external = _fp16_needs_external(model)
        _save(model, out_path, external)
        return fp32_ops, nodes, external
    # optional: onnx (the export extra)
    from export.quantize import quantize

    if calibration is None:
        raise ValidationError(f"{network}: {precision} needs calibration inputs (export.calibration.capture_calibration, or `python -m export.variants --precision int8`)")
    fp32_ops = quantize(src, out_path, calibration.calibrate, precision=precision, external=external)
    model = onnx.load(str(out_path), load_external_data=False)
    return fp32_ops, len(model.graph.node), external


def _fp16_needs_external(model) -> bool:
    total = sum(t.ByteSize() for t in model.graph.initializer)
    return total > EXTERNAL_DATA_BYTES


def _save(model, path: Path, external: bool) -> None:
    # optional: onnx (the export extra)
    import onnx

    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data" if external else None,
        size_threshold=1024,
    )


def _check_single_link(bundle: Bundle, network: str) -> None:
    """onnx refuses external data with several hard links (a guard against link attacks): say so up front."""
    data = variants(bundle.manifest, network)["fp32"].get("external_data")
    path = bundle.root / data if data else None
    if path is not None and path.exists() and path.stat().st_nlink > 1:
        raise BundleError(f"{path} has {path.stat().st_nlink} hard links, and onnx refuses to read external data "
                          f"with more than one; give it its own copy first (cp {path.name} {path.name}.tmp && "
                          f"mv {path.name}.tmp {path.name}) and run again")


def add_variant(bundle: Bundle, network: str, precision: str, calibration=None, threads: int | None = None) -> dict:
    """Convert, validate, move into place and record one variant; return its manifest entry.

    Raises :class:`ValidationError` (nothing written) when the variant fails validation.
    """
    check_precision(precision)
    if precision == "fp32":
        return variants(bundle.manifest, network)["fp32"]
    spec = bundle.spec(network)
    _check_single_link(bundle, network)
    name = variant_file(network, precision)
    stage = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=bundle.root))
    try:
        staged = stage / name
        fp32_ops, nodes, external = _convert(bundle, network, precision, staged, calibration)
        feeds = calibration.validate if calibration is not None and precision in ("int8", "fp8") else sample_feeds(bundle, network)
        fp32_path = bundle.root / variants(bundle.manifest, network)["fp32"]["file"]
        results = validate_against_fp32(staged, fp32_path, spec.output_names[0], feeds, precision, threads)
        for r in results:
            log.info("%s %s vs fp32 at %s: max_abs %.3g, rel_l2 %.3g %s", network, precision, r["dims"].get(spec.input_names[0]),
                     r["max_abs"], r["rel_l2"], "ok" if r["passed"] else "FAILED")
        failed = [r for r in results if not r["passed"]]
        if failed:
            worst = max(r["rel_l2"] for r in failed)
            raise ValidationError(
                f"{network} ({precision}) differs from the fp32 graph by rel. L2 {worst:.3g} > {REL_L2_LIMIT[precision]} "
                f"on {len(failed)} of {len(results)} inputs; calibrate on more of the pipeline's own calls "
                "(--calibration-images, --svd-steps) or use --precision fp16 for this network"
            )
        data = f"{name}.data" if external else None
        files = ([stage / data] if data else []) + [staged]
        size = sum(f.stat().st_size for f in files)
        for f in files:  # data before graph, as the exporter does
            usual_permissions(f)
            os.replace(f, bundle.root / f.name)
        if not external and (bundle.root / f"{name}.data").exists():
            (bundle.root / f"{name}.data").unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    entry = {
        "file": name,
        "external_data": data,
        "sha256": sha256_file(bundle.root / name),
        "bytes": size,
        "nodes": nodes,
        "fp32_ops": fp32_ops,
        "validation": results,
    }
    _record(bundle, network, precision, entry)
    return entry


def _record(bundle: Bundle, network: str, precision: str, entry: dict) -> None:
    net = bundle.manifest["networks"][network]
    found = variants(bundle.manifest, network)  # includes fp32 for a bundle written without variants
    found[precision] = entry
    net["variants"] = {p: found[p] for p in PRECISIONS if p in found}
    # An engine built from a replaced graph is stale (its cache key no longer matches anyway).
    bundle.save()


def add_variants(
    bundle: Bundle,
    precisions: Iterable[str],
    networks: Iterable[str] | None = None,
    calibration=None,
    threads: int | None = None,
    calibration_size: Mapping[str, int] | None = None,
) -> dict[str, dict[str, dict]]:
    """Add ``precisions`` to ``networks`` (default: :data:`DEFAULT_NETWORKS` per precision).

    ``calibration`` (a :class:`export.calibration.Calibration`) is captured from the bundle's
    own pipeline when an int8/fp8 variant is requested without one, at ``calibration_size``
    (``height``/``width``/``frames``; default the model's).
    """
    out: dict[str, dict[str, dict]] = {}
    for precision in precisions:
        check_precision(precision)
        if precision == "fp32":
            continue
        todo = [n for n in (networks or bundle.networks) if n in DEFAULT_NETWORKS[precision] and n in bundle.networks]
        if precision in ("int8", "fp8") and todo and calibration is None:
            calibration = capture_calibration(bundle, threads=threads, **dict(calibration_size or {}))
        for network in todo:
            log.info("%s: writing the %s graph", network, precision)
            out.setdefault(network, {})[precision] = add_variant(bundle, network, precision, calibration, threads)
            gc.collect()
    return out


# --------------------------------------------------------------------------- CLI


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m export.variants",
        description=(
            "Add precision variants to an existing bundle: fp16 graphs for every network, int8/fp8 Q/DQ UNet "
            "calibrated on UNet inputs captured from the bundle's own pipeline; each validated against the fp32 "
            "graph and recorded in the manifest (python -m export.onnx --precision does the same after exporting)."
        ),
        epilog=(
            "examples:\n"
            "  python -m export.variants --bundle out/svd --precision fp16,int8\n"
            "  python -m export.variants --bundle out/svd --precision int8 --calibration-size 128x128x14 --calibration-images 4"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle directory (from python -m export.onnx)")
    p.add_argument("--precision", required=True, metavar="LIST", help="comma-separated from fp16,int8,fp8")
    p.add_argument("--networks", nargs="+", metavar="NAME", help="networks (default: each precision's default networks)")
    p.add_argument("--calibration-size", metavar="HxW[xF]", help="pixel size (and frames) of the captured pipeline runs (default: the model's)")
    p.add_argument("--calibration-images", type=int, default=4, help="images whose SF-V step is captured (default 4; one more is held out)")
    p.add_argument("--svd-steps", type=int, default=25, help="steps of the guided SVD run whose calls are captured "
                   "(default 25, SVD's schedule; fewer steps cover the same sigma range in fewer calls)")
    p.add_argument("--svd-every", type=int, default=1, help="keep every N-th call of the SVD run (default 1)")
    p.add_argument("--calibration", metavar="NPZ", help="load captured inputs from this file instead of capturing (or save them here if missing)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    return p


def main(argv=None) -> int:
    return run_cli(_main)(argv)


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    precisions = parse_precisions(args.precision)
    if args.svd_steps < 2 or args.svd_every < 1 or args.calibration_images < 1:
        raise ShapeError("--svd-steps must be >= 2, --svd-every and --calibration-images >= 1")
    bundle = Bundle.load(args.bundle)
    calibration = None
    if any(p in precisions for p in ("int8", "fp8")):
        path = Path(args.calibration) if args.calibration else None
        if path is not None and path.is_file():
            calibration = Calibration.load(path)
        else:
            calibration = capture_calibration(
                bundle, images=args.calibration_images, svd_steps=args.svd_steps, svd_every=args.svd_every, threads=args.threads,
                **parse_calibration_size(args.calibration_size),
            )
            if path is not None:
                calibration.save(path)
    add_variants(bundle, precisions, args.networks, calibration=calibration, threads=args.threads)
    for network in bundle.networks:
        for precision, entry in variants(bundle.manifest, network).items():
            if precision in precisions and precision != "fp32":
                worst = max((r["rel_l2"] for r in entry["validation"]), default=float("nan"))
                print(f"{network}: {entry['file']} (rel. L2 vs fp32 <= {worst:.3g}, {entry['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
