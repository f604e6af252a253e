"""A reference for TAESDV (madebyollin/taesdv, ``taesdv.py`` at commit 1b2655e, MIT), written for the
tests independently of :mod:`networks.taesdv`: the checkpoint's layer lists as the public
``nn.Sequential`` definitions give them, the keys and shapes they imply, and the public
``decode_video`` forward in plain functional torch on a state dict.

Public layers (``conv`` = 3x3, padding 1, with bias unless marked; Block/MemBlock 64 -> 64 have an
identity skip and no keys of their own besides ``conv.0``, ``conv.2``, ``conv.4``)::

    encoder: conv(3,64), Block, [conv(64,64, stride 2, no bias), Block, Block, Block] x 3, conv(64,4)
    decoder: Clamp, conv(4,64), ReLU, [MemBlock x 3, Upsample(2), conv(64,64, no bias)] x 3, MemBlock, conv(64,3)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# (kind, c_in, c_out, bias) per index of the public nn.Sequential; keyless layers as a bare kind.
_UP = [("mem",)] * 3 + [("upsample",), ("conv", 64, 64, False)]
DECODER_LAYERS = [("clamp",), ("conv", 4, 64, True), ("relu",), *_UP, *_UP, *_UP, ("mem",), ("conv", 64, 3, True)]
_DOWN = [("conv_s2", 64, 64, False)] + [("block",)] * 3
ENCODER_LAYERS = [("conv", 3, 64, True), ("block",), *_DOWN, *_DOWN, *_DOWN, ("conv", 64, 4, True)]


def _layer_keys(prefix: str, layer: tuple) -> dict[str, tuple[int, ...]]:
    kind = layer[0]
    if kind in ("conv", "conv_s2"):
        _, c_in, c_out, bias = layer
        keys = {f"{prefix}.weight": (c_out, c_in, 3, 3)}
        if bias:
            keys[f"{prefix}.bias"] = (c_out,)
        return keys
    if kind in ("block", "mem"):
        first_in = 128 if kind == "mem" else 64  # a MemBlock's first conv sees cat(x, memory)
        keys = {}
        for j, c_in in ((0, first_in), (2, 64), (4, 64)):
            keys[f"{prefix}.conv.{j}.weight"] = (64, c_in, 3, 3)
            keys[f"{prefix}.conv.{j}.bias"] = (64,)
        return keys
    return {}


def checkpoint_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of ``taesdv.pth`` with its shape (134 tensors: 67 encoder, 67 decoder)."""
    shapes = {}
    for name, layers in (("encoder", ENCODER_LAYERS), ("decoder", DECODER_LAYERS)):
        for i, layer in enumerate(layers):
            shapes.update(_layer_keys(f"{name}.{i}", layer))
    return shapes


def random_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the public keys and shapes, random values at a PyTorch-like init scale
    (so that activations stay O(1) through 20 layers and the frames are not all clamped)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in checkpoint_shapes().items():
        fan_in = shape[1] * 9 if len(shape) == 4 else 64
        state[key] = (torch.rand(shape, generator=g) * 2 - 1) * (3.0 / fan_in) ** 0.5
    return state


def _conv(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"), padding=1)


def _mem_block(state: dict, prefix: str, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    h = F.relu(_conv(state, f"{prefix}.conv.0", torch.cat([x, mem], 1)))
    h = F.relu(_conv(state, f"{prefix}.conv.2", h))
    return F.relu(_conv(state, f"{prefix}.conv.4", h) + x)


def decode_video(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The public ``TAESDV.decode_video(x, parallel=True)``: ``x [N, T, 4, h, w]`` diffusion-space
    latents -> ``[N, T, 3, 8h, 8w]`` in about [0, 1]. The memory is the block input shifted one
    frame forward in time with a zero frame in front, trimmed back to ``T``."""
    N, T = x.shape[:2]
    x = x.reshape(N * T, *x.shape[2:])
    for i, layer in enumerate(DECODER_LAYERS):
        kind, prefix = layer[0], f"decoder.{i}"
        if kind == "clamp":
            x = torch.tanh(x / 3) * 3
        elif kind == "relu":
            x = F.relu(x)
        elif kind == "upsample":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif kind == "conv":
            x = _conv(state, prefix, x)
        elif kind == "mem":
            C, H, W = x.shape[1:]
            mem = F.pad(x.reshape(N, T, C, H, W), (0, 0, 0, 0, 0, 0, 1, 0), value=0)[:, :T].reshape(x.shape)
            x = _mem_block(state, prefix, x, mem)
    return x.reshape(N, T, *x.shape[1:])


def decode_video_sequential(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The public ``decode_video(x, parallel=False)``: frame by frame through ``decode_frame``, each
    MemBlock's memory being its input at the previous frame (zeros at the first)."""
    out, memory = [], None
    for t in range(x.shape[1]):
        h, new_memory = x[:, t], []
        for i, layer in enumerate(DECODER_LAYERS):
            kind, prefix = layer[0], f"decoder.{i}"
            if kind == "mem":
                new_memory.append(h)
                h = _mem_block(state, prefix, h, torch.zeros_like(h) if memory is None else memory.pop(0))
            elif kind == "clamp":
                h = torch.tanh(h / 3) * 3
            elif kind == "relu":
                h = F.relu(h)
            elif kind == "upsample":
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            else:
                h = _conv(state, prefix, h)
        out.append(h)
        memory = new_memory
    return torch.stack(out, 1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """The public script's frames as written to video: ``[..., 3, H, W]`` in [0, 1] -> uint8 ``[..., H, W, 3]``."""
    return frames.clamp(0, 1).mul(255).round().byte().movedim(-3, -1)
