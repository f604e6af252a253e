"""Graph clean-up after ``torch.onnx.export``: constant folding and shape inference.

The TorchScript exporter leaves many shape-computing subgraphs (``Shape -> Gather -> Unsqueeze
-> Concat`` chains) whose values are known once the weights are fixed. Polygraphy's
``fold_constants`` (onnx-graphsurgeon + ONNX Runtime) evaluates them, which roughly halves the
node count of the SVD networks, and ONNX shape inference then annotates every tensor with its
(symbolic) shape so that later tools (fp16 conversion, TensorRT) see typed tensors.

Both steps come from Polygraphy, which handles models above the 2 GB protobuf limit by
round-tripping them through a temporary file with external data.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
from polygraphy.backend.onnx import fold_constants, infer_shapes
from polygraphy.logger import G_LOGGER

log = logging.getLogger(__name__)

# Tensors larger than this are never folded: folding e.g. a transposed weight would duplicate
# it in the file. The exporter already folds weight transposes (do_constant_folding=True).
FOLD_SIZE_THRESHOLD = 16 << 20

# Symbolic shape inference reads the values of the initializers that take part in shape
# arithmetic (Reshape / Slice operands, the scalars of Mul / Div on shapes): tensors this small.
SHAPE_DATA_ELEMENTS = 64


def cleanup(
    model: onnx.ModelProto, external_data_dir: str | os.PathLike | None = None, num_passes: int | None = None
) -> onnx.ModelProto:
    """Fold constants and infer shapes; returns the cleaned model (the input may be modified).

    Args:
        model: an ONNX model in memory; tensors still on disk (see :func:`load_lean`) are read
            from ``external_data_dir`` only if a folded node needs them.
        external_data_dir: the directory of the model's external data files, if any.
        num_passes: folding passes; ``None`` folds until the graph stops changing.
    """
    before = len(model.graph.node)
    passes = 0
    # Polygraphy is chatty at INFO, and ORT (which evaluates the folded subgraphs) warns about
    # every optimisation it cannot apply; keep errors only, for the duration of the folding.
    with G_LOGGER.verbosity(G_LOGGER.ERROR), _ort_errors_only(ort):
        while num_passes is None or passes < num_passes:
            # The folders read external tensors relative to the working directory; read the ones
            # the next pass can fold here instead (shape folding makes new ones foldable).
            loaded = _load_foldable(model, Path(external_data_dir), small_bytes=0) if external_data_dir else 0
            nodes = len(model.graph.node)
            model = fold_constants(
                model,
                num_passes=1,
                do_shape_inference=False,  # below, told where the external data lives
                fold_shapes=True,
                error_ok=True,  # a subgraph ORT cannot evaluate is left as it is, not an export failure
                size_threshold=FOLD_SIZE_THRESHOLD,
            )
            model = infer_shapes(model, error_ok=True, external_data_dir=external_data_dir)
            passes += 1
            log.debug("folding pass %d: %d tensors read, %d -> %d nodes", passes, loaded, nodes, len(model.graph.node))
            if len(model.graph.node) == nodes and not loaded:
                break
    log.debug("constant folding: %d -> %d nodes in %d passes", before, len(model.graph.node), passes)
    return model


@contextlib.contextmanager
def _ort_errors_only(ort):
    """ORT's default logger at ERROR while the block runs, then back at WARNING: ORT has no getter
    for this process-wide setting, and WARNING is its default (nothing else here changes it)."""
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def _load_foldable(model: onnx.ModelProto, base_dir: Path, small_bytes: int) -> int:
    """Read into ``model`` the external tensors that feed a constant-foldable node, may hold shape
    data (at most ``SHAPE_DATA_ELEMENTS`` values), or are smaller than ``small_bytes``, from ``base_dir``; the rest stay references on disk. Returns
    how many tensors were read."""
    graph = model.graph
    constant = {t.name for t in graph.initializer}
    foldable_inputs: set[str] = set()
    loaded = 0
    for node in graph.node:  # ONNX graphs are topologically sorted: one pass propagates
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constant for i in inputs)):
            constant.update(node.output)
            foldable_inputs.update(inputs)
    for tensor in graph.initializer:
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            shape_data = math.prod(tensor.dims) <= SHAPE_DATA_ELEMENTS
            if shape_data or tensor.name in foldable_inputs or int(info.get("length", small_bytes)) < small_bytes:
                load_external_data_for_tensor(tensor, str(base_dir))
                tensor.data_location = onnx.TensorProto.DEFAULT
                del tensor.external_data[:]
                loaded += 1
    return loaded


def load_lean(path: str | os.PathLike, small_bytes: int = 1 << 20) -> onnx.ModelProto:
    """Load an ONNX file, reading only the external tensors that constant folding can use.

    A full-size UNet has 6 GB of weights in external data. Folding evaluates only nodes whose
    inputs are all constant (shape chains, constants the exporter folded), so only the
    initializers those nodes read, plus any tensor under ``small_bytes``, are loaded; the large
    weights that meet activations (Conv, MatMul) stay on disk as references until
    :func:`load_weights` (a tensor that only becomes foldable after shape folding is read on
    demand by :func:`cleanup`). This keeps clean-up of the 1.5 B UNet within a few hundred MB.
    """
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    _load_foldable(model, path.parent, small_bytes)
    return model


def load_weights(model: onnx.ModelProto, base_dir: str | os.PathLike) -> None:
    """Read the external tensors that :func:`load_lean` left on disk into ``model``."""
    onnx.load_external_data_for_model(model, str(base_dir))


def op_types(model: onnx.ModelProto) -> set[str]:
    """The op types used by the main graph."""
    return {node.op_type for node in model.graph.node}
