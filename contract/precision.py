"""Precision variants of a bundle's graphs: which exist, where they are, which one a runtime loads.

Precision lives in the graph. Besides its fp32 graph ``<network>.onnx`` a network may have

- ``<network>.fp16.onnx``: mixed precision, fp16 weights and activations, explicit ``Cast``
  nodes around the ops kept fp32 (VAE norms, ...), float32 graph inputs/outputs
  (:mod:`export.fp16`);
- ``<network>.int8.onnx``: static QuantizeLinear/DequantizeLinear pairs (int8), calibrated on
  inputs captured from the pipeline's own calls (:mod:`export.quantize`, :mod:`export.calibration`);
- ``<network>.fp8.onnx``: the same with float8 e4m3 (Hopper and newer GPUs only).

Each is recorded in the manifest under the network's ``variants`` (format_version 2)::

    "networks": {"unet": {"inputs": ..., "outputs": ..., "parameters": ...,
        "variants": {"fp32": {"file": "unet.onnx", "external_data": null, "sha256": ..., "bytes": ...,
                              "nodes": ..., "fp32_ops": [], "validation": [...]},
                     "int8": {"file": "unet.int8.onnx", ..., "validation": [{"dims": ..., "max_abs": ...,
                              "rel_l2": ..., "reference": "fp32"}]}}}}

``Bundle.variant(network, precision)`` / ``Bundle.path(network, precision)`` read one entry;
this module holds the policy: which networks get which variant, and the fallback chains.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from contract.bundle import PRECISIONS
from contract.errors import BundleError, ToolkitError
from contract.specs import NETWORKS, OPTIONAL_NETWORKS

log = logging.getLogger(__name__)

# Networks that get a variant by default (docs/precision.md has the measurements behind this):
# int8 pays where convolutions/GEMMs with weights dominate and the activations are well
# calibrated, i.e. the UNet; fp8 is a Hopper-only UNet format (TensorRT's demo does the same).
DEFAULT_NETWORKS = {
    "fp32": NETWORKS + OPTIONAL_NETWORKS,
    "fp16": NETWORKS + OPTIONAL_NETWORKS,
    "int8": ("unet",),
    "fp8": ("unet",),
}
# What a TensorRT build of a precision falls back to for a network without that variant: the
# GPU's natural float precision first. The CPU runtime falls back to fp32 (RUNTIME_FALLBACK).
TRT_FALLBACK = {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8", "fp16", "fp32"), "fp8": ("fp8", "fp16", "fp32")}
RUNTIME_FALLBACK = {p: (p, "fp32") if p != "fp32" else ("fp32",) for p in PRECISIONS}


class PrecisionError(ToolkitError):
    """An unknown precision or a precision list that cannot be honoured."""


def parse_precisions(text: str | Iterable[str]) -> list[str]:
    """``"fp32,int8"`` -> ``["fp32", "int8"]`` (order of PRECISIONS, fp32 always first)."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in PRECISIONS]
    if unknown or not items:
        raise PrecisionError(f"--precision {','.join(items) or text!r}: choose from {','.join(PRECISIONS)} (comma-separated)")
    return [p for p in PRECISIONS if p in items or p == "fp32"]


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def variant_file(network: str, precision: str) -> str:
    """The graph's file name: ``unet.onnx`` for fp32, ``unet.int8.onnx`` otherwise."""
    return f"{network}.onnx" if precision == "fp32" else f"{network}.{precision}.onnx"


def variants(manifest: Mapping, network: str) -> dict:
    """``{precision: variant entry}`` of a network (manifest format_version 2)."""
    return dict(manifest["networks"][network].get("variants") or {})


def resolve(bundle, network: str, precision: str, chain: Mapping[str, tuple[str, ...]] = RUNTIME_FALLBACK) -> tuple[str, dict]:
    """``(precision used, variant entry)`` for ``network``: the first variant of ``chain[precision]``."""
    check_precision(precision)
    have = variants(bundle.manifest, network)
    for candidate in chain[precision]:
        if candidate in have:
            return candidate, have[candidate]
    raise BundleError(f"bundle {bundle.root}: {network} has none of the graphs {', '.join(chain[precision])}; re-export it")


def missing_variants(bundle, precision: str, networks: Iterable[str] | None = None) -> list[str]:
    """Networks (of ``networks``, default the bundle's) that should have ``precision`` and lack it."""
    wanted = [n for n in (networks or bundle.networks) if n in DEFAULT_NETWORKS[precision] and n in bundle.networks]
    return [n for n in wanted if precision not in variants(bundle.manifest, n)]

