"""FVD (Unterthiner et al. 2019): the Frechet distance of I3D (Kinetics-400) features of videos.

The reference I3D weights are on no package registry, so the user supplies them: the
TorchScript detector used by StyleGAN-V and later video papers (``i3d_torchscript.pt``, called
as ``detector(videos, rescale=False, resize=True, return_features=True)`` on ``[B, 3, T, H, W]``
in ``[-1, 1]``, returning ``[B, 400]`` logits-layer features). TorchScript archives are loaded
with ``torch.jit.load`` (a serialized TorchScript program, not a Python pickle); only load a
file you trust. Without weights, use :mod:`training.features` (documented offline extractor).

``python -m training.fvd --i3d i3d_torchscript.pt --real DIR --fake DIR`` compares two folders of
videos (mp4/avi/webm/gif; at least 10 frames each, 16 used as the protocol does).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from contract.cli import run_cli
from training.data import VIDEO_SUFFIXES, DataError, video_clips
from training.frechet import frechet_distance_features


def load_i3d(path: str | Path) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"I3D weights {path} not found; pass the TorchScript FVD detector (i3d_torchscript.pt)")
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def i3d_features(detector, videos: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """``videos [N, T, 3, H, W]`` in [-1, 1] -> I3D features ``[N, 400]``."""
    out = []
    for s in range(0, len(videos), batch_size):
        x = videos[s : s + batch_size].permute(0, 2, 1, 3, 4).contiguous()  # [B, 3, T, H, W]
        out.append(detector(x, rescale=False, resize=True, return_features=True))
    return torch.cat(out)


def fvd(detector, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FVD between ``real`` and ``fake`` videos ``[N, T, 3, H, W]`` in [-1, 1]."""
    return frechet_distance_features(i3d_features(detector, real), i3d_features(detector, fake))


def load_videos(folder: Path, frames: int = 16, size: int = 224) -> torch.Tensor:
    """The first ``frames`` frames of every video under ``folder`` -> ``[N, frames, 3, size, size]``."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    clips = [next(video_clips(p, frames, size, size), None) for p in files]
    clips = [c for c in clips if c is not None]
    if len(clips) < 2:
        raise DataError(f"{folder}: need at least 2 videos of >= {frames} frames for a Frechet distance, found {len(clips)}")
    return torch.stack(clips)


@run_cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fvd", description="FVD between two folders of videos (user-supplied I3D).")
    p.add_argument("--i3d", required=True, help="TorchScript I3D detector file (i3d_torchscript.pt)")
    p.add_argument("--real", required=True)
    p.add_argument("--fake", required=True)
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args(argv)
    detector = load_i3d(args.i3d)
    value = fvd(detector, load_videos(Path(args.real), args.frames), load_videos(Path(args.fake), args.frames))
    print(json.dumps({"fvd": value}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
