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

import logging

import onnx

log = logging.getLogger(__name__)

# Tensors larger than this are never folded: folding e.g. a transposed weight would duplicate
# it in the file. The exporter already folds weight transposes (do_constant_folding=True).
FOLD_SIZE_THRESHOLD = 16 << 20


def cleanup(model: onnx.ModelProto, num_passes: int | None = None) -> onnx.ModelProto:
    """Fold constants and infer shapes; returns the cleaned model (the input may be modified).

    Args:
        model: an ONNX model in memory (external data loaded).
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


def op_types(model: onnx.ModelProto) -> set[str]:
    """The op types used by the main graph."""
    return {node.op_type for node in model.graph.node}
