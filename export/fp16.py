"""fp16 conversion that keeps numerically fragile ops in fp32.

Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``, the same code as
onnxconverter-common's): weights and activations become fp16, and every node whose op type is
in the block list keeps fp32 with ``Cast`` nodes around it. Graph inputs and outputs stay fp32
(``keep_io_types``), so a fp16 graph takes exactly the inputs of the fp32 graph and the specs'
dtypes stay true.

Why a block list: the SVD VAE overflows in fp16 (diffusers marks it ``force_upcast``); its
GroupNorm (exported as ``InstanceNormalization`` at opset 17, ``GroupNormalization`` at 18+),
the variance (``ReduceMean``/``Pow``/``Sqrt``) and attention ``Softmax`` are where the
activations' range exceeds fp16. Each network's list is ``NetworkSpec.fp32_op_types``.
"""

from __future__ import annotations

import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16


def block_list(fp32_op_types: tuple[str, ...] | list[str]) -> list[str]:
    """The converter's own block list (ops without fp16 kernels) plus the network's fragile ops."""
    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(fp32_op_types))


def to_fp16(model: onnx.ModelProto, fp32_op_types: tuple[str, ...] | list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Convert ``model`` to fp16, keeping ``fp32_op_types`` in fp32.

    Returns:
        the converted model and the sorted op types of the graph that were kept in fp32.
    """
    blocked = block_list(fp32_op_types)
    present = {node.op_type for node in model.graph.node}
    # Shape inference already ran in clean-up; running it again here would fail above 2 GB.
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=blocked, disable_shape_infer=True
    )
    return converted, sorted(present & set(blocked))
