"""Validation: run an exported graph in ONNX Runtime against the PyTorch network.

For each set of dims (e.g. ``{"batch": 2, "frames": 14, "height": 64, "width": 128}``) the
spec builds seeded sample inputs, PyTorch computes the reference output and ONNX Runtime
runs the graph on the same inputs. Reported per shape:

- ``max_abs`` = max |onnx - torch|;
- ``max_rel`` = max |onnx - torch| / max |torch|, the error relative to the output's scale
  (an element-wise ratio would blow up where the reference crosses zero).

A shape passes when ``max_abs <= atol`` (``NetworkSpec.atol``, or ``atol_fp16`` for fp16 graphs).
References can be computed before export (:func:`reference_outputs`) so that a large PyTorch
network can be freed before ONNX Runtime loads its graph.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from contract.errors import ValidationError
from contract.specs import ModelConfig, NetworkSpec, expand_dims
from engines.ort_engine import cpu_session_options

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """Sample inputs at one shape and PyTorch's output for them."""

    dims: dict[str, int]  # the pixel-space dims (batch, frames, height, width) used
    inputs: dict[str, np.ndarray]
    output: np.ndarray  # float32


def used_dims(spec: NetworkSpec, dims: Mapping[str, int]) -> dict[str, int]:
    """The subset of pixel-space ``dims`` that the network's tensors depend on."""
    symbols = {d for t in spec.inputs + spec.outputs for d in t.shape if isinstance(d, str)}
    if symbols & {"latent_height", "height"}:
        symbols.add("height")
    if symbols & {"latent_width", "width"}:
        symbols.add("width")
    return {k: int(v) for k, v in dims.items() if k in symbols}


@torch.no_grad()
def reference_outputs(
    net: torch.nn.Module, spec: NetworkSpec, config: ModelConfig, dims_list: Sequence[Mapping[str, int]], seed: int = 0
) -> list[Reference]:
    """PyTorch outputs of ``net`` on seeded sample inputs at each dims (duplicates dropped)."""
    refs, seen = [], set()
    for dims in dims_list:
        used = used_dims(spec, dims)
        key = tuple(sorted(used.items()))
        if key in seen:
            continue
        seen.add(key)
        inputs = spec.sample_inputs(expand_dims(used, config), config, seed=seed)
        output = net(*(torch.from_numpy(inputs[name]) for name in spec.input_names))
        refs.append(Reference(dims=used, inputs=inputs, output=output.float().numpy()))
    return refs


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """A CPU ONNX Runtime session for the graph at ``path`` (external data beside it)."""
    options = cpu_session_options(threads or torch.get_num_threads(), quiet=True)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(path: str | os.PathLike, spec: NetworkSpec, refs: Sequence[Reference], atol: float) -> list[dict]:
    """Run the graph at every reference shape; return one result dict per shape.

    Each result is ``{"dims", "max_abs", "max_rel", "atol", "passed"}`` (the manifest's format).
    """
    session = ort_session(path)
    results = []
    for ref in refs:
        feeds = {name: ref.inputs[name] for name in spec.input_names}
        (got,) = session.run(spec.output_names, feeds)
        want = ref.output
        if got.shape != want.shape:
            raise ValidationError(
                f"{spec.name}: ONNX Runtime output shape {list(got.shape)} differs from PyTorch's "
                f"{list(want.shape)} at {ref.dims}; the graph baked in a shape at export time"
            )
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(want).max()) if want.size else 0.0
        max_rel = max_abs / scale if scale > 0 else max_abs
        finite = bool(np.isfinite(got).all())
        results.append(
            {
                "dims": ref.dims,
                "max_abs": max_abs if finite else float("inf"),
                "max_rel": max_rel if finite else float("inf"),
                "atol": atol,
                "passed": finite and max_abs <= atol,
            }
        )
    return results


def check(spec: NetworkSpec, results: Sequence[dict], precision: str) -> None:
    """Raise :class:`ValidationError` naming every shape whose error exceeds the tolerance."""
    failed = [r for r in results if not r["passed"]]
    if not failed:
        return
    lines = "; ".join(
        f"{r['dims']}: max_abs {r['max_abs']:.3g} > atol {r['atol']:.3g} (max_rel {r['max_rel']:.3g})" for r in failed
    )
    hint = (
        "add the diverging op types to NetworkSpec.fp32_op_types or export this network in fp32 (drop --fp16)"
        if precision == "fp16"
        else "the exported graph does not reproduce PyTorch; try another --opset or report the model config"
    )
    raise ValidationError(f"{spec.name} ({precision}) failed validation against PyTorch at {lines}; {hint}")
