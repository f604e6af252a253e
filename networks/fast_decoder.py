"""A fast temporal decoder for SVD-family latents: small convolutions, a cheap link between frames.

After the TAESD family of tiny decoders (conv + ReLU + nearest-neighbour upsampling, no
normalisation or attention), with one temporal link per stage so that frames do not flicker:

- ``memory``: the stage's first convolution also sees the previous frame's features
  (``cat(x_t, x_{t-1})``, causal; TAESDV's MemBlock);
- ``tconv``: it sees the previous and the next frame's (``cat(x_{t-1}, x_t, x_{t+1})``: a
  temporal convolution of kernel 3 fused with the spatial 3x3, like SVD's ``time_conv``);
- ``none``: every frame alone (the ablation).

At a clip's ends the missing neighbour is the frame itself (replicate padding), so a chunk of
any length decodes; chunks are independent, as in SVD's temporal decoder.

Same contract as SVD's decoder: ``latent [n, C, h, w]`` (the latents divided by
``scaling_factor``, one video's frames in order) -> ``sample [n, 3, 8h, 8w]`` in about [-1, 1].
Saved as ``config.json`` + ``model.safetensors`` in one directory and loaded with safetensors.

The public TAESDV checkpoint (:mod:`networks.taesdv`) can take the same place: :func:`open_fast_decoder`
tells the two kinds apart by path (a ``.pth`` / ``.safetensors`` file is TAESDV, a directory a
distilled decoder) and gives either under the contract above.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from contract.atomic import atomic_directory
from contract.errors import ToolkitError
from networks.taesdv import LATENT_CHANNELS, SCALE_FACTOR, TAESDV, TAESDVFastDecoder, state_dict_problems

TEMPORAL_LINKS = ("memory", "tconv", "none")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "sfv-fast-decoder"


class FastDecoderError(ToolkitError):
    """A fast-decoder directory or configuration is missing or invalid."""


@dataclass(frozen=True)
class FastDecoderConfig:
    """The architecture. ``len(channels) - 1`` 2x upsamplings (3 for SVD's 8x VAE)."""

    latent_channels: int = 4  # SVD's VAE latent channels
    channels: tuple[int, ...] = (64, 64, 48, 32)  # width at the latent resolution, then after each upsampling
    blocks: tuple[int, ...] = (2, 2, 1, 1)  # residual blocks per stage (the first one carries the temporal link)
    temporal: str = "memory"  # memory | tconv | none (module docstring)

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.temporal not in TEMPORAL_LINKS:
            raise FastDecoderError(f"temporal link {self.temporal!r}: choose one of {', '.join(TEMPORAL_LINKS)}")
        if len(self.channels) < 1 or len(self.blocks) != len(self.channels):
            raise FastDecoderError(f"channels {self.channels} and blocks {self.blocks} need one entry per stage, same length")
        if min(self.channels) < 1 or min(self.blocks) < 1 or self.latent_channels < 1:
            raise FastDecoderError("channels, blocks and latent_channels must be >= 1")

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "FastDecoderConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _neighbours(x: torch.Tensor, frames: int, link: str) -> torch.Tensor:
    """``x [B*F, C, H, W]`` with the temporal neighbours concatenated on channels (replicate padding)."""
    if link == "none":
        return x
    v = x.reshape(-1, frames, *x.shape[1:])  # [B, F, C, H, W]
    prev = torch.cat([v[:, :1], v[:, :-1]], dim=1)
    parts = [v, prev] if link == "memory" else [prev, v, torch.cat([v[:, 1:], v[:, -1:]], dim=1)]
    return torch.cat(parts, dim=2).reshape(x.shape[0], -1, *x.shape[2:])


class Block(nn.Module):
    """Residual ``conv3x3 -> ReLU -> conv3x3 (+ skip) -> ReLU``; the first conv may see the neighbours."""

    def __init__(self, c_in: int, c_out: int, link: str = "none"):
        super().__init__()
        self.link = link
        width = {"none": 1, "memory": 2, "tconv": 3}[link]
        self.conv1 = nn.Conv2d(width * c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        h = F.relu(self.conv1(_neighbours(x, frames, self.link)))
        return F.relu(self.conv2(h) + self.skip(x))


class FastDecoder(nn.Module):
    """``latent [n, C, h, w]`` (one video's frames, unscaled latents) -> ``sample [n, 3, 2^k h, 2^k w]``."""

    def __init__(self, config: FastDecoderConfig = FastDecoderConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        # Per-channel latent statistics (set from training latents): the network sees unit-scale inputs.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
        self.conv_in = nn.Conv2d(config.latent_channels, c[0], 3, padding=1)
        self.stages = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, (width, n) in enumerate(zip(c, config.blocks)):
            self.stages.append(nn.ModuleList(Block(width, width, config.temporal if j == 0 else "none") for j in range(n)))
            if i + 1 < len(c):
                self.ups.append(nn.Conv2d(width, c[i + 1], 3, padding=1))
        self.conv_out = nn.Conv2d(c[-1], 3, 3, padding=1)

    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Per-channel mean and std of ``latents [..., C, h, w]`` (the decoder's input distribution)."""
        flat = latents.detach().float().movedim(-3, 0).reshape(self.config.latent_channels, -1)
        self.latent_mean.copy_(flat.mean(1))
        self.latent_std.copy_(flat.std(1).clamp_min(1e-6))

    def forward(self, latent: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """``latent [n, C, h, w]`` -> ``[n, 3, H, W]``; ``frames``: frames per clip when ``n`` holds
        several clips back to back (training batches), default all ``n`` frames are one clip."""
        return self._decode(latent, frames or latent.shape[0])

    def _decode(self, z: torch.Tensor, frames: int) -> torch.Tensor:
        x = (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]
        x = 3 * torch.tanh(x / 3)  # soft clamp: out-of-range latents (a sampler's) cannot explode the ReLUs
        x = F.relu(self.conv_in(x))
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x, frames)
            if i < len(self.ups):
                x = F.relu(self.ups[i](F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return self.conv_out(x)


# --------------------------------------------------------------------------- files


def fast_decoder_dir(path: str | os.PathLike) -> Path:
    """Accept the decoder directory itself or a training run directory holding ``decoder/``."""
    path = Path(path)
    for candidate in (path, path / "decoder"):
        if (candidate / CONFIG_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
            return candidate
    if not path.exists():
        raise FastDecoderError(f"fast decoder {path} does not exist; train one with `python -m training.decoder --out {path}`")
    raise FastDecoderError(
        f"{path} is not a fast decoder: expected {CONFIG_FILE} and {WEIGHTS_FILE} there or in {path / 'decoder'} "
        "(as written by `python -m training.decoder`)"
    )


def save_fast_decoder(decoder: FastDecoder, out: str | os.PathLike) -> Path:
    """Write ``out/config.json`` and ``out/model.safetensors``; the directory appears atomically."""
    with atomic_directory(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(decoder.config.to_json(), indent=2) + "\n")
    return Path(out)


def load_fast_decoder(path: str | os.PathLike) -> FastDecoder:
    """The decoder saved by :func:`save_fast_decoder` (or a run directory holding ``decoder/``), in eval mode."""
    folder = fast_decoder_dir(path)
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
        config = FastDecoderConfig.from_json(data)
        decoder = FastDecoder(config)
        decoder.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as exc:
        raise FastDecoderError(f"could not load the fast decoder in {folder}: {exc}; re-run training.decoder") from None
    return decoder.eval().requires_grad_(False)


# --------------------------------------------------------------------------- TAESDV and the choice of decoder

TAESDV_SUFFIXES = (".pth", ".safetensors")  # a file with one of these is a TAESDV checkpoint


def load_taesdv(path: str | os.PathLike) -> TAESDV:
    """The public TAESDV checkpoint at ``path`` (``taesdv.pth``, a plain state dict read with
    ``torch.load(weights_only=True)``, or the same tensors as ``.safetensors``), strictly: every
    key of :class:`networks.taesdv.TAESDV` present with its shape, nothing else. Eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FastDecoderError(f"TAESDV checkpoint {path} does not exist; download taesdv.pth from "
                               "https://github.com/madebyollin/taesdv (docs/models-taesdv.md)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load and safetensors raise many types for a bad file
        raise FastDecoderError(f"could not read the TAESDV checkpoint {path} ({type(exc).__name__}: {_first_line(exc)}); "
                               "pass the taesdv.pth of https://github.com/madebyollin/taesdv, a plain state dict") from None
    if not isinstance(state, dict):
        raise FastDecoderError(f"{path} holds a {type(state).__name__}, not a state dict; pass the taesdv.pth of "
                               "https://github.com/madebyollin/taesdv")
    model = TAESDV()
    problems = state_dict_problems(model, state)
    if problems:
        raise FastDecoderError(f"{path} is not a TAESDV checkpoint: {'; '.join(problems)}; pass the unmodified "
                               "taesdv.pth of https://github.com/madebyollin/taesdv")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


@dataclass(frozen=True)
class FastDecoderSource:
    """A fast decoder as found at a path: which kind, where, and the network with its own conventions."""

    kind: str  # distilled (training.decoder's directory) | taesdv (the public checkpoint)
    path: Path  # absolute: the decoder directory or the checkpoint file
    network: nn.Module  # FastDecoder, or TAESDVDecoder (diffusion-space latents in, [0, 1] out)
    latent_channels: int
    scale_factor: int

    def contract_module(self, scaling_factor: float) -> nn.Module:
        """The network under ``vae_decoder_fast``'s contract: ``latent [n, C, h, w]`` divided by
        ``scaling_factor`` -> ``sample [n, 3, H, W]`` in about [-1, 1] (the distilled decoder
        already takes it; TAESDV is wrapped by :class:`networks.taesdv.TAESDVFastDecoder`)."""
        if self.kind == "taesdv":
            return TAESDVFastDecoder(self.network, scaling_factor).eval()
        return self.network

    def manifest_fields(self) -> dict:
        """What a bundle records about it: ``kind`` and ``source`` (where the torch backend reloads it)."""
        return {"kind": self.kind, "source": str(self.path)}


def open_fast_decoder(path: str | os.PathLike) -> FastDecoderSource:
    """A file ending in .pth / .safetensors is a TAESDV checkpoint; anything else a distilled
    decoder's directory (:func:`load_fast_decoder`)."""
    path = Path(path)
    if path.suffix in TAESDV_SUFFIXES and not path.is_dir():
        model = load_taesdv(path)
        return FastDecoderSource("taesdv", path.resolve(), model.decoder, LATENT_CHANNELS, SCALE_FACTOR)
    if path.is_file():
        raise FastDecoderError(f"fast decoder {path}: a file must be a TAESDV checkpoint ending in "
                               f"{' or '.join(TAESDV_SUFFIXES)}; a distilled decoder is a directory (training.decoder's OUT)")
    decoder = load_fast_decoder(path)
    return FastDecoderSource("distilled", fast_decoder_dir(path).resolve(), decoder,
                             decoder.config.latent_channels, decoder.config.scale_factor)
