"""TAESDV, the Tiny AutoEncoder for Stable Diffusion Videos (madebyollin/taesdv, MIT licence).

The architecture in the layout of the public checkpoint ``taesdv.pth`` (a plain state dict:
``encoder.<i>.…`` and ``decoder.<i>.…``, ``i`` the index in an ``nn.Sequential``), so that the
file loads with strict key checking. Imports torch only: the exporter (``--fast-decoder
taesdv.pth``), the torch backend and training can all use it.

Decoder (the part the toolkit runs): soft clamp ``3 tanh(z/3)``, conv3x3 4 -> 64, ReLU; then three
stages of [3 MemBlocks, nearest 2x upsampling, conv3x3 without bias]; one more MemBlock; conv3x3
64 -> 3. A MemBlock's first convolution sees ``cat(x_t, x_{t-1})``: the block's *input* for the
previous frame of the clip, zeros for the first frame. There is no time shift: ``T`` latent frames
give ``T`` RGB frames, frame ``t`` from latents ``0..t`` (causal). This is the public
``decode_video(parallel=True)``; its sequential ``decode_frame`` loop gives the same frames.

Conventions of the public model, which :class:`TAESDVFastDecoder` adapts to the toolkit's
decoder contract: the input is the *diffusion-space* latent (the VAE's latent multiplied by
``scaling_factor``, unit scale), the output RGB in about [0, 1] (not clamped).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

LATENT_CHANNELS = 4  # Stable Diffusion / SVD latents
SCALE_FACTOR = 8  # three 2x upsamplings
WIDTH = 64  # every hidden layer


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """``3 tanh(x / 3)``: latents far outside the training range cannot blow up the ReLUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(x / 3)


class Block(nn.Module):
    """Encoder block: ``relu(conv3(relu(conv2(relu(conv1(x))))) + x)`` (``conv`` keys 0, 2, 4)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


class MemBlock(nn.Module):
    """Decoder block with one frame of memory: ``relu(convs(cat(x, past)) + x)``, ``x, past [T, C, H, W]``."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(torch.cat([x, past], dim=1)) + x)


def previous_frames(x: torch.Tensor) -> torch.Tensor:
    """``x [T, C, H, W]`` (one clip's frames in order) -> ``[T, C, H, W]`` holding frame ``t - 1``
    at ``t`` and zeros at ``t = 0`` (TAESDV's memory: the first frame remembers nothing)."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]], dim=0)


class TAESDVDecoder(nn.Sequential):
    """The decoder: ``z [T, 4, h, w]`` (one clip, diffusion-space latents) -> ``[T, 3, 8h, 8w]`` in ~[0, 1]."""

    def __init__(self, stages: int = 3, blocks: int = 3):
        layers: list[nn.Module] = [SoftClamp(), _conv(LATENT_CHANNELS, WIDTH), nn.ReLU()]
        for _ in range(stages):
            layers += [MemBlock(WIDTH) for _ in range(blocks)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(WIDTH, WIDTH, bias=False)]
        layers += [MemBlock(WIDTH), _conv(WIDTH, 3)]
        super().__init__(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for layer in self:
            x = layer(x, previous_frames(x)) if isinstance(layer, MemBlock) else layer(x)
        return x


class TAESDVEncoder(nn.Sequential):
    """The encoder (in the checkpoint; not used by the toolkit's decoding): RGB ``[N, 3, H, W]`` in
    [0, 1] -> ``[N, 4, H/8, W/8]``, frame by frame."""

    def __init__(self, stages: int = 3, blocks: int = 3):
        layers: list[nn.Module] = [_conv(3, WIDTH), Block(WIDTH)]
        for _ in range(stages):
            layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH) for _ in range(blocks)]
        layers.append(_conv(WIDTH, LATENT_CHANNELS))
        super().__init__(*layers)


class TAESDV(nn.Module):
    """Both halves, so that the public checkpoint's keys (``encoder.*``, ``decoder.*``) map one to one."""

    def __init__(self):
        super().__init__()
        self.encoder = TAESDVEncoder()
        self.decoder = TAESDVDecoder()


def state_dict_problems(module: nn.Module, state: Mapping[str, object]) -> list[str]:
    """What keeps ``state`` from loading strictly into ``module``: missing keys, unexpected keys,
    non-tensor values and shape mismatches, each as one phrase (empty when it loads)."""
    want = module.state_dict()
    problems = []
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    for k, v in state.items():
        if k not in want:
            continue
        if not isinstance(v, torch.Tensor):
            problems.append(f"{k} is a {type(v).__name__}, not a tensor")
        elif tuple(v.shape) != tuple(want[k].shape):
            problems.append(f"{k} has shape {tuple(v.shape)}, expected {tuple(want[k].shape)}")
    return problems


def _few(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


class TAESDVFastDecoder(nn.Module):
    """TAESDV's decoder under the toolkit's decoder contract (``vae_decoder_fast``):
    ``latent [n, 4, h, w]`` (one clip's frames in order, the VAE latents *divided* by
    ``scaling_factor``, as ``vae_decoder`` takes them) -> ``sample [n, 3, 8h, 8w]`` in about [-1, 1].

    The conventions are converted here, inside the graph: the latent is multiplied back by
    ``scaling_factor`` (TAESDV takes diffusion-space latents) and the [0, 1] output is mapped to
    [-1, 1] by ``2 x - 1`` (not clamped, like both decoders it stands in for). Frame count in ==
    frame count out; every call (a decode chunk) starts with empty memory.
    """

    def __init__(self, decoder: TAESDVDecoder, scaling_factor: float):
        super().__init__()
        self.decoder = decoder
        self.scaling_factor = float(scaling_factor)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return 2 * self.decoder(latent * self.scaling_factor) - 1
