"""The ``clip_preprocess`` graph: CLIP's view of the conditioning image as a small ONNX graph.

diffusers' SVD pipeline feeds CLIP with ``_resize_with_antialiasing(2x - 1, (S, S))``: a Gaussian
blur whose sigma and kernel size follow the downscale factor (after scikit-image), then a bicubic
resize with ``align_corners=True`` (a = -0.75), then ``(x + 1) / 2`` and CLIP's normalisation.
The blur depends on the input size, so tracing the torch code would freeze one size; this graph
computes sigma, the kernel size and the kernel from the input's shape at run time, so that one
graph serves every image and every runtime (Python, C++) runs the same numbers.

Graph: ``pixels`` uint8 ``[image_height, image_width, 3]`` -> ``pixel_values`` float32
``[1, 3, S, S]``. Its PyTorch reference is :class:`networks.wrappers.ClipPreprocessNet`, which calls
diffusers' own function; :func:`export.validate` compares the two like any other network.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.specs import ModelConfig, NetworkSpec


def build_clip_preprocess(spec: NetworkSpec, config: ModelConfig, opset: int = 17) -> onnx.ModelProto:
    """The graph for ``spec`` (``clip_preprocess``) at the model's CLIP size and normalisation."""
    size = config.clip_image_size
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value, dtype) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    f32, i64 = np.float32, np.int64
    # 1. uint8 HWC -> float32 NCHW in [-1, 1] (diffusers normalises before the resize).
    x = node("Cast", ["pixels"], "x_float", to=TensorProto.FLOAT)
    x = node("Div", [x, const("c255", 255.0, f32)], "x_unit")
    x = node("Transpose", [x], "x_chw", perm=[2, 0, 1])
    x = node("Unsqueeze", [x, const("axis0", [0], i64)], "x_nchw")
    x = node("Sub", [node("Mul", [x, const("c2", 2.0, f32)], "x_times2"), const("c1", 1.0, f32)], "x_signed")

    # 2. One normalised Gaussian per axis, from the image's own shape (see _gaussian_kernel).
    shape = node("Shape", ["pixels"], "image_shape")
    kernel_h, pad_h = _gaussian_kernel(node, const, shape, 0, "h", size)
    kernel_w, pad_w = _gaussian_kernel(node, const, shape, 1, "w", size)

    # 3. Reflect-pad and convolve, one depthwise kernel per channel: along the width first, then
    #    the height, as diffusers' _gaussian_blur2d does.
    zero = const("zero", [0], i64)
    for kernel, pad, view, tag in ((kernel_w, pad_w, [1, 1, 1, -1], "w"), (kernel_h, pad_h, [1, 1, -1, 1], "h")):
        weight = node("Expand", [node("Reshape", [kernel, const(f"kview_{tag}", view, i64)], f"kview1_{tag}"),
                                 const(f"kexpand_{tag}", [3, 1, 1, 1], i64)], f"weight_{tag}")
        hpad, wpad = (zero, pad) if tag == "w" else (pad, zero)
        pads = node("Concat", [zero, zero, hpad, wpad, zero, zero, hpad, wpad], f"pads_{tag}", axis=0)
        x = node("Conv", [node("Pad", [x, pads], f"padded_{tag}", mode="reflect"), weight], f"blur_{tag}", group=3)

    # 4. Bicubic resize with align_corners, PyTorch's a = -0.75, as two matrix products
    #    ``W_h @ x @ W_w^T`` whose [S, n] weights are built from the image's shape (see
    #    _bicubic_weights). ONNX Runtime's cubic Resize took 13 ms for a 64x64 image on one core
    #    (its per-pixel kernel); the products take well under a millisecond there, and fewer
    #    FLOPs than the blur at 576x1024.
    weights_h = _bicubic_weights(node, const, shape, 0, "h", size)
    weights_w = _bicubic_weights(node, const, shape, 1, "w", size)
    x = node("MatMul", [x, node("Transpose", [weights_w], "weights_w_t", perm=[1, 0])], "resized_w")  # [1, 3, H, S]
    x = node("MatMul", [weights_h, x], "resized")  # [S, H] @ [1, 3, H, S] -> [1, 3, S, S]
    x = node("Div", [node("Add", [x, const("c1b", 1.0, f32)], "x_plus1"), const("c2b", 2.0, f32)], "x_01")
    mean = const("mean", np.asarray(config.image_mean, f32).reshape(1, 3, 1, 1), f32)
    std = const("std", np.asarray(config.image_std, f32).reshape(1, 3, 1, 1), f32)
    node("Div", [node("Sub", [x, mean], "x_centred"), std], "pixel_values")

    (inp,), (out,) = spec.inputs, spec.outputs
    graph = helper.make_graph(
        nodes,
        "clip_preprocess",
        [helper.make_tensor_value_info(inp.name, TensorProto.UINT8, list(inp.shape))],
        [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, list(out.shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="sfv-deploy")
    onnx.checker.check_model(model)
    return model


def _bicubic_weights(node, const, shape: str, axis: int, tag: str, size: int) -> str:
    """Graph nodes for the ``[S, n]`` matrix of PyTorch's bicubic resize (``align_corners=True``) along ``axis``.

    As ATen computes it, in float32: source position ``real = i (n - 1) / (S - 1)``, tap
    ``j = clamp(floor(real), 0, n - 1)``, fraction ``t = clamp(real - j, 0, 1)``, the four
    cubic-convolution weights (Keys 1981, a = -0.75) of taps ``j - 1 .. j + 2``, each tap
    clamped into the image (border pixels repeat). Row ``i`` holds those weights at their taps'
    columns, summed where clamping makes taps coincide, zero elsewhere.
    """
    f32, i64 = np.float32, np.int64
    a = -0.75
    n = node("Gather", [shape, const(f"bw_idx_{tag}", [axis], i64)], f"bw_n_{tag}", axis=0)  # [1]
    last = node("Sub", [n, const(f"bw_one_{tag}", 1, i64)], f"bw_last_{tag}")
    last_f = node("Cast", [last], f"bw_last_f_{tag}", to=TensorProto.FLOAT)
    scale = node("Div", [last_f, const(f"bw_den_{tag}", float(size - 1), f32)], f"bw_scale_{tag}")
    real = node("Mul", [const(f"bw_out_{tag}", np.arange(size), f32), scale], f"bw_real_{tag}")  # [S]
    zero_f, one_f = const(f"bw_zf_{tag}", 0.0, f32), const(f"bw_of_{tag}", 1.0, f32)
    floor = node("Min", [node("Max", [node("Floor", [real], f"bw_floor_{tag}"), zero_f], f"bw_fl0_{tag}"), last_f], f"bw_j_f_{tag}")
    t = node("Min", [node("Max", [node("Sub", [real, floor], f"bw_t_raw_{tag}"), zero_f], f"bw_t0_{tag}"), one_f], f"bw_t_{tag}")
    j = node("Cast", [floor], f"bw_j_{tag}", to=TensorProto.INT64)

    def near(x: str, k: str) -> str:  # ((a + 2) x - (a + 3)) x x + 1, for |x| <= 1
        inner = node("Sub", [node("Mul", [const(f"bw_a2_{k}", a + 2, f32), x], f"bw_n1_{k}"), const(f"bw_a3_{k}", a + 3, f32)], f"bw_n2_{k}")
        return node("Add", [node("Mul", [node("Mul", [inner, x], f"bw_n3_{k}"), x], f"bw_n4_{k}"), one_f], f"bw_near_{k}")

    def far(x: str, k: str) -> str:  # ((a x - 5a) x + 8a) x - 4a, for 1 < |x| < 2
        inner = node("Sub", [node("Mul", [const(f"bw_a_{k}", a, f32), x], f"bw_f1_{k}"), const(f"bw_5a_{k}", 5 * a, f32)], f"bw_f2_{k}")
        inner = node("Add", [node("Mul", [inner, x], f"bw_f3_{k}"), const(f"bw_8a_{k}", 8 * a, f32)], f"bw_f4_{k}")
        return node("Sub", [node("Mul", [inner, x], f"bw_f5_{k}"), const(f"bw_4a_{k}", 4 * a, f32)], f"bw_far_{k}")

    one_minus_t = node("Sub", [one_f, t], f"bw_1mt_{tag}")
    coeffs = [far(node("Add", [t, one_f], f"bw_tp1_{tag}"), f"0{tag}"), near(t, f"1{tag}"),
              near(one_minus_t, f"2{tag}"), far(node("Add", [one_minus_t, one_f], f"bw_2mt_{tag}"), f"3{tag}")]
    columns = node("Unsqueeze", [node("Range", [const(f"bw_r0_{tag}", 0, i64),
                                                node("Squeeze", [n, const(f"bw_sq_{tag}", [0], i64)], f"bw_ns_{tag}"),
                                                const(f"bw_r1_{tag}", 1, i64)], f"bw_cols_{tag}"),
                                 const(f"bw_ax0_{tag}", [0], i64)], f"bw_cols2_{tag}")  # [1, n]
    weights = None
    for k, c in enumerate(coeffs):
        tap = node("Add", [j, const(f"bw_off_{k}{tag}", k - 1, i64)], f"bw_tap_raw_{k}{tag}")
        tap = node("Min", [node("Max", [tap, const(f"bw_i0_{k}{tag}", 0, i64)], f"bw_tap0_{k}{tag}"), last], f"bw_tap_{k}{tag}")
        hit = node("Equal", [node("Unsqueeze", [tap, const(f"bw_ax1_{k}{tag}", [1], i64)], f"bw_tapc_{k}{tag}"), columns], f"bw_hit_{k}{tag}")
        term = node("Mul", [node("Cast", [hit], f"bw_hitf_{k}{tag}", to=TensorProto.FLOAT),
                            node("Unsqueeze", [c, const(f"bw_ax1c_{k}{tag}", [1], i64)], f"bw_cc_{k}{tag}")], f"bw_term_{k}{tag}")
        weights = term if weights is None else node("Add", [weights, term], f"bw_sum_{k}{tag}")
    return weights  # [S, n]


def _gaussian_kernel(node, const, shape: str, axis: int, tag: str, size: int) -> tuple[str, str]:
    """Graph nodes for diffusers' blur kernel along ``axis`` (0: height, 1: width) of the image.

    In float64, as Python computes them: ``sigma = max((n / S - 1) / 2, 0.001)`` and the kernel
    size ``ks = int(max(4 sigma, 3))``, made odd. In float32, as ``_gaussian`` computes it:
    ``g = exp(-t^2 / (2 sigma^2))`` at ``t = arange(ks) - ks // 2``, divided by its sum.
    Returns the names of the kernel ``[ks]`` and of the padding per side ``[1]`` (``ks // 2``).
    """
    f32, f64, i64 = np.float32, np.float64, np.int64
    n = node("Gather", [shape, const(f"idx_{tag}", [axis], i64)], f"n_{tag}", axis=0)
    factor = node("Div", [node("Cast", [n], f"n_{tag}_f64", to=TensorProto.DOUBLE), const(f"size_{tag}", float(size), f64)], f"factor_{tag}")
    half_excess = node("Div", [node("Sub", [factor, const(f"one_{tag}", 1.0, f64)], f"fm1_{tag}"), const(f"two_{tag}", 2.0, f64)], f"half_{tag}")
    sigma = node("Max", [half_excess, const(f"min_sigma_{tag}", 0.001, f64)], f"sigma_{tag}")
    ks_float = node("Max", [node("Mul", [sigma, const(f"four_{tag}", 4.0, f64)], f"s4_{tag}"), const(f"three_{tag}", 3.0, f64)], f"ksf_{tag}")
    ks = node("Cast", [node("Floor", [ks_float], f"ksfloor_{tag}")], f"ks_raw_{tag}", to=TensorProto.INT64)
    # ks + 1 - ks % 2: ks itself when odd, else the next odd number.
    ks = node("Sub", [node("Add", [ks, const(f"i1_{tag}", 1, i64)], f"ks_p1_{tag}"),
                      node("Mod", [ks, const(f"i2_{tag}", 2, i64)], f"ks_mod_{tag}")], f"ks_{tag}")
    pad = node("Div", [ks, const(f"i2b_{tag}", 2, i64)], f"pad_{tag}")
    ks_scalar = node("Squeeze", [ks, const(f"sq_{tag}", [0], i64)], f"ks_scalar_{tag}")
    pad_scalar = node("Squeeze", [pad, const(f"sqp_{tag}", [0], i64)], f"pad_scalar_{tag}")
    steps = node("Range", [const(f"i0_{tag}", 0, i64), ks_scalar, const(f"i1r_{tag}", 1, i64)], f"range_{tag}")
    taps = node("Cast", [node("Sub", [steps, pad_scalar], f"taps_i_{tag}")], f"taps_{tag}", to=TensorProto.FLOAT)
    sigma32 = node("Cast", [sigma], f"sigma32_{tag}", to=TensorProto.FLOAT)
    denom = node("Mul", [const(f"c2f_{tag}", 2.0, f32), node("Mul", [sigma32, sigma32], f"sigma_sq_{tag}")], f"denom_{tag}")
    expo = node("Div", [node("Neg", [node("Mul", [taps, taps], f"taps_sq_{tag}")], f"neg_sq_{tag}"), denom], f"expo_{tag}")
    gauss = node("Exp", [expo], f"gauss_{tag}")
    total = node("ReduceSum", [gauss, const(f"axes_{tag}", [0], i64)], f"gauss_sum_{tag}", keepdims=1)
    return node("Div", [gauss, total], f"kernel_{tag}"), pad
