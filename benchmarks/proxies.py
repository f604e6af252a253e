"""Deterministic performance proxies of a bundle, against the committed ``benchmarks/proxies.json``.

Timings need repeats and a quiet machine; these numbers need neither, and any change in them is
a change in the work the code or the exporter asks the machine to do:

- per network graph: ``nodes``, ``initializer_elements`` (weights and folded constants),
  ``bytes`` (the ``.onnx`` file plus external data), ``flops`` of one call at the model's default
  clip (batch 1; 2 per multiply-add of MatMul / Gemm / Conv / ConvTranspose, counted on the ONNX
  graph with the operand shapes of one ONNX Runtime run);
- per clip (SF-V one step, and SVD ``SVD_STEPS`` guided steps, at the model's default frames and
  size): ``engine_calls`` per network and ``host_bytes`` per network, the bytes of the inputs and
  outputs that cross between the host and the engine.

``python -m benchmarks.proxies`` compares a bundle (default: the gate exports the tiny model, and
says so) with the baseline: every change is reported, an increase fails (exit 1) unless the
baseline is updated, after review, with ``python -m benchmarks.proxies --update``.
Values are compared after a JSON round trip, so tuples and lists (a fresh export vs a cached one)
compare equal.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.errors import BenchmarkError
from benchmarks.workload import RunConfig, synthetic_image
from contract.atomic import write_json_atomic
from contract.bundle import Bundle
from contract.cli import run_cli
from contract.environment import library_versions
from contract.specs import expand_dims
from runtime.pipeline import VideoPipeline

log = logging.getLogger(__name__)

BASELINE = Path(__file__).with_name("proxies.json")
UPDATE_COMMAND = "python -m benchmarks.proxies --update"
SVD_STEPS = 4  # guided steps of the SVD clip (engine calls scale linearly with steps)
_COUNTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def normalise(obj):
    """A JSON round trip: tuples become lists, keys strings, so equal contents compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


# --------------------------------------------------------------------------- graphs


def clip_dims(config) -> dict[str, int]:
    """Every symbol of the specs at the model's default clip, batch 1 (latent sizes from the specs)."""
    h, w = config.default_height, config.default_width
    return expand_dims({"batch": 1, "frames": config.num_frames, "height": h, "width": w, "image_height": h,
                        "image_width": w}, config)


def graph_flops(model, inputs: Mapping[str, "np.ndarray"]) -> int:
    """FLOPs of one call of the ONNX ``model`` on ``inputs`` (see the module doc).

    The shapes of the counted nodes' operands are read from one ONNX Runtime run with those
    operands exposed as outputs: static shape inference loses dimensions that the exported
    graphs compute at run time (``Tile`` repeats derived from the frame count).
    """
    # optional: onnx (the export extra)
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # outputs are added to a copy
    counted = [n for n in model.graph.node if n.op_type in _COUNTED_OPS]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    known = {o.name for o in model.graph.output}
    wanted = []
    for node in counted:
        for name in (node.input[0], node.input[1], node.output[0]):
            if name not in weights and name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
            wanted.append(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # count the graph as exported
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {**weights, **{n: list(np.shape(v)) for n, v in zip(names, session.run(None, dict(inputs)))}}
    shapes.update({k: list(np.shape(v)) for k, v in inputs.items()})
    total = 0
    for node in counted:
        out, a, b = shapes[node.output[0]], shapes[node.input[0]], shapes[node.input[1]]
        if node.op_type in ("MatMul", "Gemm"):
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if trans_a else a[-1]
            total += 2 * math.prod(out) * k
        elif node.op_type == "Conv":  # weight [C_out, C_in / groups, k...]
            total += 2 * math.prod(out) * math.prod(b[1:])
        else:  # ConvTranspose: weight [C_in, C_out / groups, k...]; each input element feeds C_out/g * k outputs
            total += 2 * math.prod(a) * math.prod(b[1:])
    return int(total)


def network_proxies(bundle) -> dict[str, dict[str, int]]:
    """Per network of ``bundle``: nodes, initializer elements, bytes and FLOPs (see the module doc)."""
    # optional: onnx (the export extra)
    import onnx

    dims = clip_dims(bundle.config)
    out = {}
    for name in bundle.networks:
        path = bundle.path(name)
        model = onnx.load(str(path), load_external_data=False)
        spec = bundle.spec(name)
        external = sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
        out[name] = {
            "nodes": len(model.graph.node),
            "initializer_elements": sum(math.prod(i.dims) for i in model.graph.initializer),
            "bytes": path.stat().st_size + external,
            "flops": graph_flops(model, {t.name: np.zeros(t.resolve(dims), dtype=t.dtype) for t in spec.inputs}),
        }
    return out


# --------------------------------------------------------------------------- clips


def _nbytes(x) -> int:
    if hasattr(x, "nbytes"):
        return int(x.nbytes)
    return int(x.numel() * x.element_size())  # torch tensors


def _engines_of(pipe) -> list:
    engines = pipe.engines
    return list(engines.values()) if isinstance(engines, Mapping) else list(engines.all())


def clip_proxies(bundle_dir: str | os.PathLike) -> dict[str, dict]:
    """Engine calls and host<->engine bytes per network for one SF-V and one guided SVD clip."""
    config = Bundle.load(bundle_dir).config
    counts: dict[str, dict[str, int]] = {}
    with VideoPipeline.from_bundle(bundle_dir, threads=1) as pipe:
        for engine in _engines_of(pipe):  # count every call at the engine boundary
            def run(inputs, _run=engine.run, _name=engine.spec.name):
                outputs = _run(inputs)
                c = counts.setdefault(_name, {"calls": 0, "bytes": 0})
                c["calls"] += 1
                c["bytes"] += sum(_nbytes(v) for v in inputs.values()) + sum(_nbytes(v) for v in outputs.values())
                return outputs

            engine.run = run
        image = synthetic_image(config.default_height, config.default_width)
        out = {}
        for rc in (RunConfig("sfv", 1), RunConfig("svd", SVD_STEPS)):
            counts.clear()
            pipe(image, seed=0, progress=False, **rc.pipeline_kwargs())
            out[rc.name] = {"engine_calls": {n: c["calls"] for n, c in sorted(counts.items())},
                            "host_bytes": {n: c["bytes"] for n, c in sorted(counts.items())}}
    return out


def measure(bundle_dir: str | os.PathLike) -> dict:
    """All proxies of the bundle at ``bundle_dir`` (plus what they depend on, for the record)."""
    bundle = Bundle.load(bundle_dir)
    return {
        "networks": network_proxies(bundle),
        "clips": clip_proxies(bundle_dir),
        "model_config": normalise(bundle.config.to_json()),
        "clip": {k: v for k, v in clip_dims(bundle.config).items() if k in ("frames", "height", "width")},
        "versions": library_versions(("torch", "onnx", "onnxruntime")),
    }


# --------------------------------------------------------------------------- baseline


def _flatten(obj, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def compare(measured: Mapping, baseline: Mapping) -> tuple[list[str], list[str]]:
    """``(increases, other changes)`` of the networks' and clips' proxies, one line each.

    The model config must match (normalised), else the comparison is meaningless.
    """
    measured, baseline = normalise(measured), normalise(baseline)
    if measured.get("model_config") != baseline.get("model_config"):
        raise BenchmarkError("the bundle's model config differs from the one the proxies baseline was recorded for "
                             f"(benchmarks/proxies.json); proxies are recorded for the tiny model: export it with "
                             "`python -m export.onnx --model tiny --out DIR`, or record a new baseline with "
                             f"`{UPDATE_COMMAND}` if the tiny model itself changed")
    increases, changes = [], []
    new, old = _flatten({k: measured[k] for k in ("networks", "clips")}), _flatten({k: baseline[k] for k in ("networks", "clips")})
    for key in sorted(set(new) | set(old)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None:
            increases.append(f"{key}: new, {b}")
        elif b is None:
            changes.append(f"{key}: gone (was {a})")
        else:
            line = f"{key}: {a} -> {b} ({100 * (b / a - 1):+.2f}%)" if a else f"{key}: {a} -> {b}"
            (increases if b > a else changes).append(line)
    return increases, changes


def load_baseline(path: str | os.PathLike = BASELINE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"no proxies baseline at {path}; record one with `{UPDATE_COMMAND}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON ({exc}); record it again with `{UPDATE_COMMAND}`") from None


def save_baseline(measured: Mapping, path: str | os.PathLike = BASELINE) -> None:
    write_json_atomic(path, {"format": 1, "update_command": UPDATE_COMMAND, "model": "tiny", **normalise(measured)})


def export_tiny(out: Path) -> Path:
    """Export the tiny model with this tree's exporter (no validation: only the graphs are read)."""
    # optional: torch (the export extra)
    from benchmarks.gate import ROOT, export_bundle

    return export_bundle(ROOT, out, "tiny")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.proxies",
        description="Deterministic proxies (graph nodes, FLOPs, weights, bytes, engine calls and host<->engine "
                    "bytes per clip) of the tiny bundle vs benchmarks/proxies.json; an increase exits 1.",
        epilog="examples:\n  python -m benchmarks.proxies                 # exports the tiny model (says so), compares\n"
               "  python -m benchmarks.proxies --bundle DIR\n"
               "  python -m benchmarks.proxies --update        # after reviewing an intended change; commit the file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", help="an exported tiny bundle (default: export one, explicitly, to a temporary dir)")
    p.add_argument("--update", action="store_true", help="write the measured proxies to the baseline file")
    p.add_argument("--baseline", default=str(BASELINE), help="baseline file (default benchmarks/proxies.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    @run_cli
    def _main(argv):
        args = _parser().parse_args(argv)
        with tempfile.TemporaryDirectory(prefix="sfv-proxies-") as tmp:
            bundle = Path(args.bundle) if args.bundle else export_tiny(Path(tmp) / "bundle")
            measured = measure(bundle)
        if args.update:
            save_baseline(measured, args.baseline)
            print(f"wrote {args.baseline}; review `git diff {args.baseline}` and commit it")
            return 0
        increases, changes = compare(measured, load_baseline(args.baseline))
        for line in changes:
            print(f"changed: {line}")
        for line in increases:
            print(f"INCREASED: {line}")
        if increases:
            print(f"proxies increased; if intended, record them with `{UPDATE_COMMAND}` and commit the file")
            return 1
        print("proxies: no increase" + (f" ({len(changes)} decreased or removed)" if changes else " (unchanged)"))
        return 0

    return _main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
