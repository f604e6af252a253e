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
import os
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

log = logging.getLogger(__name__)

# Tensors larger than this are never folded: folding e.g. a transposed weight would duplicate
# it in the file. The exporter already folds weight transposes (do_constant_folding=True).
FOLD_SIZE_THRESHOLD = 16 << 20


@contextlib.contextmanager
def _working_dir(path: str | os.PathLike | None):
    """Run inside ``path``: ONNX Runtime and onnx-graphsurgeon resolve the external data of a
    model held in memory relative to the working directory (and refuse paths outside it)."""
    if path is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


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
    import onnxruntime as ort
    from polygraphy.backend.onnx import fold_constants, infer_shapes
    from polygraphy.logger import G_LOGGER

    # Polygraphy is chatty at INFO, and ORT (which evaluates the folded subgraphs) warns about
    # every optimisation it cannot apply; keep errors only.
    G_LOGGER.module_severity = G_LOGGER.ERROR
    ort.set_default_logger_severity(3)
    before = len(model.graph.node)
    with _working_dir(external_data_dir):
        model = fold_constants(
            model,
            num_passes=num_passes,
            do_shape_inference=True,
            fold_shapes=True,
            error_ok=True,  # a subgraph ORT cannot evaluate is left as it is, not an export failure
            size_threshold=FOLD_SIZE_THRESHOLD,
        )
        model = infer_shapes(model, error_ok=True)
    log.debug("constant folding: %d -> %d nodes", before, len(model.graph.node))
    return model


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
    graph = model.graph
    constant = {t.name for t in graph.initializer}
    foldable_inputs: set[str] = set()
    for node in graph.node:  # ONNX graphs are topologically sorted: one pass propagates
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constant for i in inputs)):
            constant.update(node.output)
            foldable_inputs.update(inputs)
    for tensor in graph.initializer:
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            if tensor.name in foldable_inputs or int(info.get("length", small_bytes)) < small_bytes:
                load_external_data_for_tensor(tensor, str(path.parent))
                tensor.data_location = onnx.TensorProto.DEFAULT
                del tensor.external_data[:]
    return model


def load_weights(model: onnx.ModelProto, base_dir: str | os.PathLike) -> None:
    """Read the external tensors that :func:`load_lean` left on disk into ``model``."""
    onnx.load_external_data_for_model(model, str(base_dir))


def op_types(model: onnx.ModelProto) -> set[str]:
    """The op types used by the main graph."""
    return {node.op_type for node in model.graph.node}
