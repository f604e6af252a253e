"""The PyTorch reference engine: one network of a loaded model, called through its spec's signature."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from engines.base import Engine
from contract.environment import require_gpu
from networks.wrappers import build_network
from contract.specs import NetworkSpec

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


class TorchEngine(Engine):
    """Runs ``networks.wrappers.build_network(spec.name, model)`` eagerly.

    This is the reference every other backend is compared with: the module is exactly what the
    ONNX exporter traces. numpy inputs move to ``device`` (and to fp16 under
    ``precision="fp16"``); outputs come back as float32 numpy arrays. ``precision="fp16"`` converts the model's network in place
    (networks sharing a module, the VAE's encoder and decoder, then both run in fp16).
    """

    backend = "torch"

    def __init__(self, spec: NetworkSpec, model, precision: str = "fp32", device: str | torch.device = "cpu"):
        super().__init__(spec, precision)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.model = model
        self.device = torch.device(device)
        self.dtype = _PRECISIONS[precision]
        self.module: nn.Module | None = None

    def _activate(self) -> None:
        if self.device.type == "cuda":
            require_gpu("the torch backend on device 'cuda'")
        self.module = build_network(self.spec.name, self.model).to(self.device, self.dtype)

    def _deactivate(self) -> None:
        # The wrapped networks belong to the model; only this engine's reference goes.
        self.module = None

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._to_device(inputs[name]) for name in self.spec.input_names]
        with torch.no_grad():
            out = self.module(*args)
        return {self.spec.output_names[0]: out.to("cpu", torch.float32).numpy()}

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        # Strides are kept: PyTorch picks its convolution kernels by memory layout, and the
        # callers' layouts are diffusers' (the VAE view is a transposed view, as in diffusers).
        t = torch.from_numpy(a if a.flags.writeable else a.copy(order="K"))
        dtype = self.dtype if t.is_floating_point() else t.dtype
        return t.to(self.device, dtype)
