"""Static Q/DQ quantization (int8, float8 e4m3) of one fp32 graph with ONNX Runtime's quantizer.

One graph serves both targets: QuantizeLinear/DequantizeLinear pairs with *symmetric* scales
(zero point 0, signed int8 activations and weights, per-channel weights) is the form TensorRT's
explicit quantization requires, and ONNX Runtime's CPU provider fuses the same pairs into
integer Conv/MatMul kernels (measured speed: docs/precision.md).

What is quantized: the inputs of ``Conv``, ``Gemm`` and the ``MatMul`` nodes with a weight.
What stays float (no Q/DQ): the attention ``MatMul`` nodes whose two inputs are both
activations (Q·Kᵀ and attention·V: their ranges change with every call and dominated the error
when quantized, docs/precision.md), ``Softmax``, the normalisations, and every elementwise op.

Calibration runs in two steps so that the full-size UNet (6.1 GB of fp32 weights) fits a 24 GiB
machine: ONNX Runtime's MinMax (int8) or Distribution (fp8) calibrator is fed the captured
inputs one at a time (each call merges its ranges and drops its outputs) and its ranges are
written to a calibration cache; then the calibrator is freed and ``quantize_static`` reads that cache instead
of calibrating with the model already in memory.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import MinMaxCalibrater, create_calibrator, save_tensors_data

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# Op types that always stay float in a quantized graph (recorded as the variant's fp32_ops).
FLOAT_OPS = ("Softmax", "InstanceNormalization", "GroupNormalization", "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Erf", "Sigmoid")


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose two inputs are both computed (attention scores and mixing)."""
    constant = {t.name for t in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not (set(n.input) & constant)]


class FeedReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of feeds (one call each)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self.feeds = list(feeds)
        self.index = 0

    def get_next(self):
        if self.index >= len(self.feeds):
            return None
        self.index += 1
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.feeds[self.index - 1].items()}

    def __len__(self):
        return len(self.feeds)

    def rewind(self):
        self.index = 0


def _types(precision: str, method: str | None = None):
    if precision == "int8":
        return QuantType.QInt8, CalibrationMethod[method or "MinMax"]
    if precision == "fp8":
        return QuantType.QFLOAT8E4M3FN, CalibrationMethod.Distribution  # the only method ORT allows for float8
    raise ValueError(f"no Q/DQ quantization for precision {precision!r}")


def split_batch(feed: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``{name: [B, ...]}`` -> ``B`` feeds ``{name: [1, ...]}`` (every UNet input leads with the batch)."""
    batch = len(next(iter(feed.values())))
    return [{k: v[i : i + 1] for k, v in feed.items()} for i in range(batch)]


def _lean_minmax_calibrator(src: Path, augmented: str):
    """ONNX Runtime's MinMax calibrator, built so that the model's weights are in memory once.

    ``create_calibrator`` keeps the source ModelProto (all weights) alive while it opens the
    calibration session on the augmented copy, and the session prepacks the weights once more:
    on the full-size UNet (6.1 GB of weights) that peaked at 19.7 GB before the first call. Here
    the ModelProto is dropped as soon as the augmented graph is written (the calibrator reads only
    the output names it recorded), and the session skips prepacking and graph optimisation (ranges
    must be those of the graph's own tensors).
    """
    calibrator = MinMaxCalibrater(src, list(QUANTIZED_OPS), augmented_model_path=augmented,
                                  use_external_data_format=True, symmetric=True)
    calibrator.augment_graph()
    calibrator.model = None
    gc.collect()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    calibrator.infer_session = ort.InferenceSession(augmented, options, providers=["CPUExecutionProvider"])
    return calibrator


def calibrate(
    src: str | os.PathLike, feeds: Sequence[Mapping[str, np.ndarray]], precision: str, cache: str | os.PathLike, method: str | None = None
) -> None:
    """Collect the activation ranges of ``src`` on ``feeds`` (one at a time) and save them to ``cache``."""
    _, method = _types(precision, method)
    with tempfile.TemporaryDirectory(prefix="calibrate-", dir=Path(cache).parent) as tmp:
        augmented = str(Path(tmp) / "augmented.onnx")
        if method == CalibrationMethod.MinMax:
            calibrator = _lean_minmax_calibrator(Path(src), augmented)
        else:
            calibrator = create_calibrator(Path(src), list(QUANTIZED_OPS), augmented_model_path=augmented,
                                           calibrate_method=method, use_external_data_format=True,
                                           providers=["CPUExecutionProvider"], extra_options={"symmetric": True})
        # One call per sample: each call merges its ranges into the calibrator's and drops the
        # outputs, so memory does not grow with the number of feeds; and a guided call (batch 2)
        # runs as two batch-1 calls, which see the same activations (so the same ranges) with
        # half the intermediate tensors alive.
        for feed in feeds:
            for sample in split_batch(feed):
                calibrator.collect_data(FeedReader([sample]))
        ranges = calibrator.compute_data()
        del calibrator
        gc.collect()
    save_tensors_data(ranges, cache)


def quantize(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    feeds: Sequence[Mapping[str, np.ndarray]],
    precision: str = "int8",
    external: bool = False,
    keep_float: Iterable[str] | None = None,
    method: str | None = None,
) -> list[str]:
    """Write the Q/DQ ``precision`` graph of ``src`` to ``dst``, calibrated on ``feeds``.

    Args:
        keep_float: node names left unquantized (default: :func:`activation_matmuls`).
        method: int8 calibration method of ONNX Runtime (``MinMax``, the default, ``Percentile``,
            ``Entropy``); fp8 always uses ``Distribution``.

    Returns:
        the sorted op types that stay float (the variant's ``fp32_ops``).
    """
    qtype, method = _types(precision, method)
    lean = onnx.load(str(src), load_external_data=False)
    excluded = list(activation_matmuls(lean) if keep_float is None else keep_float)
    present = {n.op_type for n in lean.graph.node}
    del lean
    dst = Path(dst)
    cache = dst.parent / f".{dst.name}.ranges.json"
    try:
        calibrate(src, feeds, precision, cache, method.name)
        gc.collect()
        quantize_static(
            str(src),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=False,
            activation_type=qtype,
            weight_type=qtype,
            nodes_to_exclude=excluded,
            use_external_data_format=external,
            calibrate_method=method,
            calibration_cache_path=str(cache),
            extra_options={
                "ActivationSymmetric": True,  # zero point 0: TensorRT's explicit quantization needs it
                "WeightSymmetric": True,
            },
        )
    finally:
        cache.unlink(missing_ok=True)
    log.info("%s: %s Q/DQ graph, %d activation MatMuls left float", Path(src).name, precision, len(excluded))
    return sorted((present & set(FLOAT_OPS)) | ({"MatMul"} if excluded else set()))
