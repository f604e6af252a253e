"""``python -m export.onnx``: lower an SVD-family model's networks to validated ONNX graphs.

For each network (CLIP image encoder, VAE encoder, UNet, temporal VAE decoder) the spec in
:mod:`contract.specs` drives one chain::

    torch.onnx.export (TorchScript, dynamo=False, named dynamic axes)
      -> clean-up (Polygraphy constant folding + ONNX shape inference)      export/cleanup.py
      -> validation in ONNX Runtime against PyTorch at other shapes         export/validate.py

plus the ``clip_preprocess`` graph (export/preprocess_graph.py). Other precisions (fp16, int8,
fp8) are variants made from the validated fp32 graphs (``--precision``, export/variants.py).

and the bundle directory receives ``<network>.onnx`` (plus ``<network>.onnx.data`` above the
2 GB protobuf limit) and, last, ``manifest.json``. Every graph is written and validated in a
hidden staging directory and moved into place only when all requested networks passed, so an
interrupted or failed export never leaves a bundle that looks complete.

Why TorchScript and not the dynamo exporter: measured on the tiny UNet (docs/export.md), the
dynamo graph was slower in ONNX Runtime and failed at batch 2 after export at batch 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import inspect
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import onnx
import torch

from contract.atomic import usual_permissions
from contract.bundle import MANIFEST, SAMPLERS, Bundle, SamplerConfig, new_manifest, sha256_file
from contract.cli import quiet_logging, run_cli
from contract.environment import library_versions
from contract.errors import BundleError, ModelLayoutError, ShapeError, ToolkitError, UnknownNetworkError
from contract.precision import parse_precisions
from contract.specs import (
    NETWORKS,
    OPTIONAL_NETWORKS,
    PREPROCESS_NETWORKS,
    ModelConfig,
    NetworkSpec,
    build_specs,
    check_network_names,
    check_resolution,
    expand_dims,
)
from export.calibration import parse_calibration_size
from export.cleanup import cleanup, load_lean, load_weights
from export.preprocess_graph import build_clip_preprocess
from export.validate import check, compare, reference_outputs
from export.variants import add_variants
from networks.fast_decoder import open_fast_decoder
from networks.models import BUILTIN_MODELS, SVDModel, load_model
from networks.wrappers import build_network

log = logging.getLogger(__name__)

EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"
OPSETS = range(14, 21)  # the TorchScript exporter's supported range that the specs' ops need
DEFAULT_OPSET = 17
# Above this many bytes of weights a graph cannot be one protobuf (2 GiB limit, with headroom
# for the graph itself): weights go to <network>.onnx.data.
EXTERNAL_DATA_BYTES = 1_800_000_000
# A UNet above this many parameters is "full size": export and validate at small latents.
LARGE_UNET_PARAMS = 100_000_000
# Which model component each network wraps (a component is freed once no network needs it).
_COMPONENT = {"clip_preprocess": None, "image_encoder": "image_encoder", "vae_encoder": "vae", "unet": "unet", "vae_decoder": "vae"}
ALL_NETWORKS = PREPROCESS_NETWORKS + NETWORKS + OPTIONAL_NETWORKS
_VERSIONED = ("torch", "onnx", "onnxruntime", "diffusers", "transformers", "polygraphy", "onnx_graphsurgeon")


# --------------------------------------------------------------------------- shapes


def default_dims(config: ModelConfig, full_size: bool) -> tuple[dict[str, int], list[dict[str, int]]]:
    """Export sample dims and validation dims for a model.

    The graph is traced at one small shape and validated at others (batch 1 and 2, other frame
    counts, a non-square resolution) to prove the dynamic axes really are dynamic. For the full
    size model both stay at small latents so that validation costs seconds, not minutes.
    """
    m = config.pixel_multiple
    if full_size:
        side = 2 * m
        export = {"batch": 1, "frames": 3, "height": side, "width": side}
        validate = [
            {"batch": 1, "frames": 2, "height": m, "width": m},
            {"batch": 2, "frames": 4, "height": m, "width": 2 * m},
        ]
    else:
        side = max(m, 64 // m * m)
        export = {"batch": 1, "frames": 3, "height": side, "width": side}
        validate = [
            {"batch": 1, "frames": 8, "height": side, "width": side},
            {"batch": 2, "frames": 14, "height": side, "width": side + 2 * m},
            {"batch": 1, "frames": 25, "height": side + 2 * m, "width": side},
        ]
    return export, validate


def check_dims(config: ModelConfig, dims: Mapping[str, int]) -> None:
    """Raise :class:`ShapeError` for a batch/frame count below 1 or an unsupported resolution."""
    for key in ("batch", "frames"):
        if key in dims and int(dims[key]) < 1:
            raise ShapeError(f"{key} must be at least 1, got {dims[key]}")
    if "height" in dims or "width" in dims:
        check_resolution(config, int(dims["height"]), int(dims["width"]))


# --------------------------------------------------------------------------- one network


def _free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _weight_bytes(net: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters())


def _human(n: float) -> str:
    """Bytes as B/KB/MB/GB (powers of 1000)."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def export_network(
    name: str,
    model: SVDModel,
    spec: NetworkSpec,
    config: ModelConfig,
    stage: Path,
    sample_dims: Mapping[str, int],
    validate_dims: Sequence[Mapping[str, int]],
    opset: int = DEFAULT_OPSET,
    say=log.info,
    release: bool = False,
    net: torch.nn.Module | None = None,
) -> tuple[dict, list[Path]]:
    """Trace, clean up, save and validate one network's fp32 graph into directory ``stage``.

    Args:
        model: the loaded model; the network is wrapped with :func:`networks.wrappers.build_network`.
        release: drop the network's component from ``model`` once traced (the references for
            validation are computed before tracing), so that the full-size UNet's 6 GB of
            PyTorch weights are freed before its ONNX weights are read back.
        net: the module to export instead of ``model``'s (the fast decoder, which no model holds).

    Returns:
        the manifest entry (with one graph variant) and the files written in ``stage`` (the
        external data file first, so that it is moved into the bundle first).
    """
    t0 = time.perf_counter()
    net = net if net is not None else build_network(name, model)
    params = sum(p.numel() for p in net.parameters())
    large = _weight_bytes(net) > EXTERNAL_DATA_BYTES
    say(f"{name}: exporting {params:,} parameters at {dict(sample_dims)} (opset {opset})")

    # PyTorch references first: a full-size network is then no longer needed after tracing.
    refs = reference_outputs(net, spec, config, validate_dims)
    raw_dir = stage / f"{name}.raw"
    _trace(net, spec, spec.sample_inputs(expand_dims(dict(sample_dims), config), config), raw_dir / f"{name}.onnx", opset)
    t_export = time.perf_counter() - t0
    del net
    if release and _COMPONENT.get(name):
        setattr(model, _COMPONENT[name], None)
    _free_memory()

    graph, raw_nodes = _clean(raw_dir / f"{name}.onnx")
    precision = "fp32"  # other precisions are variants made from this graph (export/variants.py)
    variant, files = _save(graph, stage / f"{name}.onnx", large)
    del graph
    _free_memory()
    say(f"{name}: exported in {time.perf_counter() - t0:.1f} s (trace {t_export:.1f} s), "
        f"{raw_nodes} -> {variant['nodes']} nodes after clean-up, {_human(variant['bytes'])}")
    variant.update(fp32_ops=[], validation=_validate(files[-1], spec, refs, precision, say))
    entry = {**spec.to_json(), "parameters": params, "sample_dims": dict(sample_dims), "variants": {precision: variant}}
    return entry, files


def export_preprocess(name: str, model: SVDModel, spec: NetworkSpec, config: ModelConfig, stage: Path,
                      opset: int = DEFAULT_OPSET, validate: bool = True, say=log.info) -> tuple[dict, list[Path]]:
    """Build a pre-processing graph (``clip_preprocess``) and validate it against its PyTorch reference.

    Validated at image sizes from 2x3 pixels to larger than 576x1024, up- and downscaling.
    """
    graph = build_clip_preprocess(spec, config, opset=max(opset, 11))
    variant, files = _save(graph, stage / f"{name}.onnx", large=False)
    sizes = [(2, 3), (64, 48), (320, 240), (576, 1024), (1200, 700)] if validate else []
    refs = reference_outputs(build_network(name, model), spec, config, [{"image_height": h, "image_width": w} for h, w in sizes])
    variant.update(fp32_ops=[], validation=_validate(files[-1], spec, refs, "fp32", say))
    return {**spec.to_json(), "parameters": 0, "variants": {"fp32": variant}}, files


# --------------------------------------------------------------------------- steps of one export


def _trace(net: torch.nn.Module, spec: NetworkSpec, inputs: Mapping, path: Path, opset: int) -> None:
    """``torch.onnx.export`` (TorchScript) of ``net`` at ``inputs`` with the spec's names and dynamic axes."""
    path.parent.mkdir()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python ints from shapes are expected: the dynamic axes were
        # checked by validating at other shapes, which is what matters.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            tuple(torch.from_numpy(inputs[n]) for n in spec.input_names),
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _clean(raw: Path) -> tuple[onnx.ModelProto, int]:
    """Constant folding and shape inference, weights read back once; the raw directory goes.

    Above 2 GB the exporter wrote one external file per weight: the clean-up runs with the large
    weights left on disk, then reads them once (the save writes a single ``.onnx.data``).
    """
    graph = load_lean(raw)
    raw_nodes = len(graph.graph.node)
    graph = cleanup(graph, external_data_dir=raw.parent)
    load_weights(graph, raw.parent)
    shutil.rmtree(raw.parent)
    return graph, raw_nodes


def _save(graph: onnx.ModelProto, path: Path, large: bool) -> tuple[dict, list[Path]]:
    """Write ``graph`` to ``path`` (weights to ``<name>.data`` when ``large``); return its variant entry."""
    data_name = f"{path.name}.data" if large else None
    nodes = len(graph.graph.node)
    onnx.save_model(graph, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    files = ([path.parent / data_name] if data_name else []) + [path]
    entry = {"file": path.name, "external_data": data_name, "sha256": sha256_file(path),
             "bytes": sum(f.stat().st_size for f in files), "nodes": nodes}
    return entry, files


def _validate(path: Path, spec: NetworkSpec, refs, precision: str, say) -> list[dict]:
    """ONNX Runtime vs the PyTorch references; raise :class:`ValidationError` past the tolerance."""
    atol = spec.atol_fp16 if precision == "fp16" else spec.atol
    t1 = time.perf_counter()
    results = compare(path, spec, refs, atol)
    for r in results:
        say(f"{spec.name}: {precision} vs torch at {r['dims']}: max_abs {r['max_abs']:.3g}, max_rel {r['max_rel']:.3g} "
            f"(atol {atol:g}) {'ok' if r['passed'] else 'FAILED'}")
    check(spec, results, precision)
    if results:
        say(f"{spec.name}: validated at {len(results)} shapes in {time.perf_counter() - t1:.1f} s")
    return results


# --------------------------------------------------------------------------- the bundle


def _check_networks(networks: Iterable[str] | None, fast_decoder: bool = False) -> list[str]:
    """The networks to export in bundle order (default: the pre-processing graph and all four,
    plus ``vae_decoder_fast`` with a fast decoder)."""
    networks = list(PREPROCESS_NETWORKS + NETWORKS) if networks is None else list(networks)
    if not networks:
        raise UnknownNetworkError(f"no network to export; choose from {', '.join(ALL_NETWORKS)}")
    if "vae_decoder_fast" in networks and not fast_decoder:
        raise UnknownNetworkError("vae_decoder_fast needs its weights: pass --fast-decoder DIR (the OUT of training.decoder) "
                                  "or --fast-decoder taesdv.pth (TAESDV's checkpoint)")
    return check_network_names(networks + (["vae_decoder_fast"] if fast_decoder else []), ALL_NETWORKS)


def fast_decoder_for(found, config: ModelConfig) -> tuple[torch.nn.Module, dict]:
    """A fast decoder found by :func:`networks.fast_decoder.open_fast_decoder` (a distilled decoder's
    directory, or a TAESDV checkpoint) under ``vae_decoder_fast``'s contract, checked to take this
    model's latents, and the manifest fields that say which one it is (``kind``, ``source``)."""
    if found.latent_channels != config.latent_channels or found.scale_factor != config.vae_scale_factor:
        fix = ("TAESDV decodes SD/SVD latents only; use a decoder distilled from this model (training.decoder)"
               if found.kind == "taesdv" else "distil one from this model with training.decoder")
        raise ShapeError(
            f"fast decoder {found.path} takes {found.latent_channels} latent channels and upsamples {found.scale_factor}x, the model "
            f"{config.latent_channels} and {config.vae_scale_factor}x; {fix}"
        )
    return found.contract_module(config.scaling_factor), found.manifest_fields()


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file; pass a directory (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create output directory {out} ({exc.strerror}); choose a writable --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BundleError(f"output directory {out} is not writable; choose a writable --out or fix its permissions")


def _previous_entries(out: Path, config: ModelConfig, exporting: list[str]) -> tuple[dict, dict]:
    """Network and engine entries of an existing bundle in ``out`` that this export keeps."""
    if not (out / MANIFEST).is_file():
        return {}, {}
    try:
        old = Bundle.load(out)
    except BundleError as exc:
        log.warning("ignoring the existing manifest in %s: %s", out, exc)
        return {}, {}
    keep = {k: v for k, v in old.manifest["networks"].items() if k not in exporting}
    if keep and old.config != config:
        raise BundleError(
            f"{out} holds {', '.join(keep)} exported from another model config; export into a new --out "
            f"or re-export all networks there (omit --networks)"
        )
    # Engines built from a graph that is being replaced are stale; others stay.
    engines = {
        k: v
        for k, v in old.manifest.get("engines", {}).items()
        if k not in exporting and not (isinstance(v, dict) and v.get("network") in exporting)
    }
    return keep, engines


def _removes_new_empty_out(export):
    """On failure or interruption, remove the ``out`` directories the call created (deepest
    first) while they are still empty, so a failed export leaves no empty bundle directory."""

    @functools.wraps(export)
    def wrapper(*args, **kwargs):
        out = Path(inspect.signature(export).bind(*args, **kwargs).arguments["out"])
        new = [d for d in (out, *out.parents) if not d.exists()]
        try:
            return export(*args, **kwargs)
        except BaseException:
            for d in new:
                try:
                    d.rmdir()
                except OSError:  # not empty (or never created): keep it and its parents
                    break
            raise

    return wrapper


@_removes_new_empty_out
def export_bundle(
    model: SVDModel | str | os.PathLike,
    out: str | os.PathLike,
    networks: Iterable[str] | None = None,
    opset: int = DEFAULT_OPSET,
    unet: str | os.PathLike | None = None,
    validate_dims: Sequence[Mapping[str, int]] | None = None,
    progress: bool = True,
    sample_dims: Mapping[str, int] | None = None,
    fast_decoder: str | os.PathLike | None = None,
    sampler: str = "euler",
) -> Bundle:
    """Export ``networks`` of ``model`` to ``out`` as validated ONNX graphs plus ``manifest.json``.

    Args:
        model: a loaded :class:`SVDModel`, or ``tiny`` / ``svd-random`` / a diffusers SVD directory.
        out: the bundle directory (created if missing). Networks of an existing bundle that are
            not re-exported keep their entries.
        networks: subset of :data:`ALL_NETWORKS`; default ``clip_preprocess`` and the four of
            :data:`contract.specs.NETWORKS` (plus ``vae_decoder_fast`` with ``fast_decoder``).
        opset: ONNX opset (14-20).
        unet: UNet directory replacing the model's (only when ``model`` is not loaded yet).
        validate_dims: dims (``batch``/``frames``/``height``/``width``) to validate at; default
            per model size (:func:`default_dims`); ``[]`` skips validation.
        progress: log one line per step (otherwise only at debug level).
        sample_dims: the dims to trace at; default per model size.
        fast_decoder: a fast decoder to add as ``vae_decoder_fast``: a distilled one (``training.decoder``'s
            OUT directory) or a TAESDV checkpoint file (``taesdv.pth`` / ``.safetensors``).
        sampler: the bundle's sampler, recorded with its defaults in the manifest: ``euler`` (SVD,
            SF-V) or ``lcm`` (consistency sampling for AnimateLCM-SVD-xt: 4 steps, guidance 1.0 -> 1.2).
    """
    say = log.info if progress else log.debug
    if sampler not in SAMPLERS:
        raise ToolkitError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    names = _check_networks(networks, fast_decoder is not None)
    if int(opset) not in OPSETS:
        raise ShapeError(f"opset {opset} is not supported; use {OPSETS.start}-{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    out = Path(out)
    _prepare_out(out)
    found = open_fast_decoder(fast_decoder) if fast_decoder is not None else None  # before a possibly large model
    model, owned = _loaded(model, unet, say)
    export_dims, check_list = _trace_and_check_dims(model, sample_dims, validate_dims)
    fast = fast_decoder_for(found, model.config) if found is not None else None
    kept, engines = _previous_entries(out, model.config, names)
    manifest = new_manifest(model.source, model.unet_source, model.config, {
        "exporter": EXPORTER,
        "opset": int(opset),
        "versions": library_versions(_VERSIONED),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sample_dims": export_dims,
    }, SamplerConfig.builtin(sampler))
    with _staging_dir(out) as stage:
        entries, staged = _export_networks(names, model, owned, stage, export_dims, check_list, opset, fast, say)
        _install(staged, entries, out)
    manifest["networks"] = {n: ({**kept, **entries})[n] for n in ALL_NETWORKS if n in kept or n in entries}
    manifest["engines"] = engines
    bundle = Bundle(root=out, manifest=manifest)
    bundle.save()  # last, atomically: a bundle without its manifest is not a bundle
    say(f"wrote {out / MANIFEST} ({', '.join(manifest['networks'])})")
    return bundle


def _loaded(model: SVDModel | str | os.PathLike, unet, say) -> tuple[SVDModel, bool]:
    """``(model, owned)``: the loaded model, and whether this export loaded it (and may free its parts)."""
    if isinstance(model, SVDModel):
        if unet is not None:
            raise ToolkitError("pass unet= only with a model path; a loaded SVDModel already has its UNet")
        return model, False
    t0 = time.perf_counter()
    say(f"loading model {model}" + (f" with UNet {unet}" if unet else ""))
    loaded = load_model(model, unet=unet)
    say(f"loaded in {time.perf_counter() - t0:.1f} s")
    return loaded, True


def _trace_and_check_dims(model: SVDModel, sample_dims, validate_dims) -> tuple[dict[str, int], list[dict[str, int]]]:
    """The dims to trace at and the list to validate at (defaults per model size, overrides applied, checked)."""
    config = model.config
    full_size = model.unet is not None and sum(p.numel() for p in model.unet.parameters()) > LARGE_UNET_PARAMS
    export_dims, check_list = default_dims(config, full_size)
    export_dims = {**export_dims, **(sample_dims or {})}
    check_list = check_list if validate_dims is None else [dict(d) for d in validate_dims]
    check_list = [{**export_dims, **d} for d in check_list]  # fill symbols a dims entry leaves out
    for dims in [export_dims, *check_list]:
        check_dims(config, dims)
    return export_dims, check_list


@contextlib.contextmanager
def _staging_dir(out: Path):
    """A private folder inside ``out`` where graphs are written before they are moved into place."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out)).resolve()
    except OSError as exc:
        raise BundleError(f"cannot write to {out} ({exc.strerror}); choose a writable --out") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _export_networks(names: list[str], model: SVDModel, owned: bool, stage: Path, export_dims, check_list,
                     opset: int, fast: tuple[torch.nn.Module, dict] | None, say) -> tuple[dict, list[Path]]:
    """Export, clean and validate each network into ``stage``; ``(manifest entries, staged files)``."""
    specs = build_specs(model.config)
    entries, staged = {}, []
    for i, name in enumerate(names):
        say(f"[{i + 1}/{len(names)}] {name}")
        if name in PREPROCESS_NETWORKS:
            entries[name], files = export_preprocess(name, model, specs[name], model.config, stage, opset,
                                                     validate=bool(check_list), say=say)
        else:
            component = _COMPONENT.get(name)
            # A model loaded here frees each component (the 6 GB UNet) once no later network needs it.
            last_use = owned and component not in {_COMPONENT.get(n) for n in names[i + 1 :]}
            net = fast[0] if name == "vae_decoder_fast" else None
            entries[name], files = export_network(name, model, specs[name], model.config, stage, export_dims,
                                                  check_list, opset=opset, say=say, release=last_use, net=net)
            if name == "vae_decoder_fast":
                entries[name].update(fast[1])  # which decoder, and where the torch backend loads it from
        staged += files
    return entries, staged


def _install(staged: list[Path], entries: dict, out: Path) -> None:
    """Move the validated graphs into ``out`` (data before graph) and drop external data they no longer use."""
    for f in staged:
        usual_permissions(f)  # staged files are private (mkdtemp); the bundle is not
        os.replace(f, out / f.name)
    for entry in entries.values():
        for variant in entry["variants"].values():
            stale = out / f"{variant['file']}.data"
            if variant["external_data"] is None and stale.exists():
                stale.unlink()


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description=(
            "Export the networks of a Stable Video Diffusion / SF-V model to ONNX, validate each graph in "
            "ONNX Runtime against PyTorch at several shapes, and write a bundle directory "
            "(<network>.onnx files + manifest.json) for the runtime and the TensorRT builder."
        ),
        epilog=(
            "examples:\n"
            "  python -m export.onnx --model tiny --out /tmp/bundle\n"
            "  python -m export.onnx --model ~/models/svd-img2vid --unet runs/sfv/unet --out bundle --fp16\n"
            "  python -m export.onnx --model svd-random --networks unet --out /tmp/full   # 1.5 B UNet, external data\n"
            "  python -m export.onnx --model ~/models/svd-img2vid-xt --unet AnimateLCM-SVD-xt.safetensors --sampler lcm --out lcm\n"
            "  python -m export.onnx --model runs/vae/model --fast-decoder runs/decoder --out bundle   # + vae_decoder_fast\n"
            "  python -m export.onnx --model ~/models/svd-img2vid --fast-decoder taesdv.pth --out bundle   # + TAESDV as vae_decoder_fast\n"
            "\nThe graphs have dynamic batch, frames, height and width; --frames/--height/--width only choose the\n"
            "shape traced at export time (small is faster). Validation always runs at other shapes."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny", metavar="DIR|" + "|".join(BUILTIN_MODELS),
                   help="diffusers SVD model directory, or a built-in random model: tiny (seconds) or svd-random "
                        "(full SVD shapes, ~9 GB written once to $SFV_CACHE) (default: tiny)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write (created if missing)")
    p.add_argument("--unet", metavar="DIR|FILE", help="UNet replacing the model's: a directory (config.json + safetensors, e.g. a "
                   "distilled SF-V UNet) or one .safetensors state dict in diffusers keys (e.g. AnimateLCM-SVD-xt.safetensors)")
    p.add_argument("--sampler", choices=SAMPLERS, default="euler",
                   help="the bundle's default sampler, recorded in its manifest: euler (SVD, SF-V) or lcm (consistency "
                        "sampling for AnimateLCM-SVD-xt: 4 steps, guidance 1.0 -> 1.2) (default euler)")
    p.add_argument("--networks", nargs="+", metavar="NAME",
                   help=f"networks to export (default: all but vae_decoder_fast): {', '.join(ALL_NETWORKS)}")
    p.add_argument("--fast-decoder", metavar="DIR|FILE",
                   help="also export a fast decoder as vae_decoder_fast: a distilled one (the OUT directory of "
                        "`python -m training.decoder`) or TAESDV's public checkpoint (a file ending in .pth or "
                        ".safetensors; docs/models-taesdv.md)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset {OPSETS.start}-{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    p.add_argument("--fp16", action="store_true", help="short for --precision fp32,fp16")
    p.add_argument("--precision", default="fp32", metavar="LIST",
                   help="graph variants to write, comma-separated from fp32,fp16,int8,fp8 (default fp32): fp16 for every "
                        "network (<network>.fp16.onnx), int8/fp8 Q/DQ for the UNet calibrated on its captured inputs; "
                        "each is validated against the fp32 graph and recorded under 'variants' (docs/precision.md)")
    p.add_argument("--calibration-size", metavar="HxW[xF]",
                   help="with int8/fp8: pixel size (and frames) of the pipeline runs whose UNet inputs calibrate the "
                        "quantized graph (default: the model's default size and frame count)")
    p.add_argument("--frames", type=int, help="frames of the export sample (default 3)")
    p.add_argument("--height", type=int, help="pixel height of the export sample (a multiple of the model's pixel multiple)")
    p.add_argument("--width", type=int, help="pixel width of the export sample")
    p.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check (not recommended)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (Path(args.model) / MANIFEST).is_file():  # before loading: a bundle is not a model
        raise ModelLayoutError(
            f"--model {args.model} is an exported bundle (it has {MANIFEST}); --model wants a diffusers model directory "
            f"(model_index.json, unet/, vae/, image_encoder/, ...) or one of {', '.join(BUILTIN_MODELS)}; "
            f"to run the bundle, pass it to `python -m runtime.generate --bundle {args.model}`"
        )
    if (args.height is None) != (args.width is None):
        raise ShapeError("pass --height and --width together (both multiples of the model's pixel multiple)")
    sample = {}
    if args.frames is not None:
        sample["frames"] = args.frames
    if args.height is not None:
        sample.update(height=args.height, width=args.width)
    check_dims(ModelConfig(vae_scale_factor=1, unet_downsample=1), {k: v for k, v in sample.items() if k == "frames"})
    _check_networks(args.networks, args.fast_decoder is not None)  # before loading a possibly large model

    precisions = parse_precisions(args.precision + (",fp16" if args.fp16 else ""))
    calibration_size = parse_calibration_size(args.calibration_size)
    with quiet_logging(args.quiet):
        _export(args, precisions, sample, calibration_size)
    return 0


def _export(args, precisions, sample, calibration_size) -> None:
    bundle = export_bundle(
        args.model,
        args.out,
        networks=args.networks,
        opset=args.opset,
        unet=args.unet,
        validate_dims=[] if args.no_validate else None,
        progress=not args.quiet,
        sample_dims=sample or None,
        fast_decoder=args.fast_decoder,
        sampler=args.sampler,
    )
    if len(precisions) > 1:
        add_variants(bundle, precisions, args.networks, calibration_size=calibration_size)


if __name__ == "__main__":
    raise SystemExit(main())
