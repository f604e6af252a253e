"""Train a model's temporal VAE (``AutoencoderKLTemporalDecoder``) to reconstruct video frames.

The built-in ``tiny`` model's VAE is random, so a decoder distilled from it would prove nothing
about images. This short training step gives it a real job: clips ``[F, 3, H, W]`` from the
offline sources of :mod:`training.data` are encoded, a latent is drawn from the posterior and
the temporal decoder reconstructs the clip; loss = L1 + ``kl_weight`` KL (Kingma & Welling 2014;
the usual tiny KL weight of latent-diffusion VAEs). The output is a complete model directory,
``OUT/model``, in the diffusers layout whose ``vae/`` holds the trained (EMA) VAE and whose other
components are the source model's (hard links where possible), so every command that takes
``--model`` takes it::

    python -m training.vae --model tiny --data bigbuckbunny,synthetic --out runs/vae
    python -m training.decoder --model runs/vae/model --data bigbuckbunny,synthetic --out runs/decoder

Real SVD weights need no such step: their VAE already reconstructs images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from contract.atomic import atomic_directory
from contract.cli import run_cli
from networks.models import load_model, resolve_model_dir
from training.data import load_clips
from training.loop import begin, run_steps
from training.options import CLIP_OPTION_HELP, config_from_args, config_parser
from training.sfv import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAEConfig:
    """Options of the VAE training step and their defaults (sized for the tiny model on a CPU)."""

    model: str = "tiny"  # diffusers SVD directory, 'tiny' or 'svd-random'
    data: str = "bigbuckbunny,synthetic"  # comma-separated: video directories, 'bigbuckbunny', 'synthetic'
    out: str = "runs/vae"  # writes OUT/model (the model with the trained vae/) and metrics
    frames: int = 4  # frames per clip (the temporal decoder mixes frames within a clip)
    height: int = 64  # clip size in pixels (multiples of the VAE's 8)
    width: int = 64
    crop: int = 32  # train on random crops of this side (0: whole frames); the VAE is convolutional
    num_clips: int = 64  # clips per source
    stride: int = 1  # keep every stride-th source frame
    holdout: float = 0.25  # fraction of each source's clips held out (the last ones) for evaluation
    batch_size: int = 4  # clips per step
    max_steps: int = 400
    max_minutes: float = 0.0  # also stop after this wall-clock time (0: no limit)
    lr: float = 5e-4  # AdamW
    kl_weight: float = 1e-6
    ema_decay: float = 0.99
    seed: int = 0
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    log_every: int = 10
    resume: bool = False  # continue from OUT/checkpoints/latest

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range option."""
        for name, ok, msg in [
            ("frames", self.frames >= 1, "must be >= 1"),
            ("height", self.height >= 8 and self.height % 8 == 0, "must be a positive multiple of 8"),
            ("width", self.width >= 8 and self.width % 8 == 0, "must be a positive multiple of 8"),
            ("crop", self.crop == 0 or (self.crop % 8 == 0 and 8 <= self.crop <= min(self.height, self.width)),
             "must be 0 or a multiple of 8 no larger than the clip"),
            ("num_clips", self.num_clips >= 2, "must be >= 2 (some clips are held out)"),
            ("stride", self.stride >= 1, "must be >= 1"),
            ("holdout", 0 <= self.holdout < 1, "must be in [0, 1)"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("max_steps", self.max_steps >= 1, "must be >= 1"),
            ("max_minutes", self.max_minutes >= 0, "must be >= 0"),
            ("lr", 0 < self.lr <= 1, "must be in (0, 1]"),
            ("kl_weight", self.kl_weight >= 0, "must be >= 0"),
            ("ema_decay", 0 <= self.ema_decay < 1, "must be in [0, 1)"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
        ]:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {msg}")


# --------------------------------------------------------------------------- data


def split_clips(
    data: str, frames: int, height: int, width: int, num_clips: int, stride: int = 1, seed: int = 0, holdout: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel clips of every comma-separated source, split into ``(train [N, F, 3, H, W], held_out [M, F, 3, H, W])``.

    Each source's last ``holdout`` fraction is held out, and the clip before it is dropped,
    because consecutive Big Buck Bunny clips share frames. The VAE step and the decoder
    distillation call this with the same arguments, so neither trains on the held-out clips.
    """
    train, held = [], []
    for source in [s.strip() for s in data.split(",") if s.strip()]:
        clips = load_clips(source, frames, height, width, num_clips, stride, seed)[0]
        n_held = round(len(clips) * holdout) if holdout else 0
        if n_held and len(clips) - n_held - 1 < 1:
            raise ConfigError(f"--data {source}: {len(clips)} clips are too few to hold out {n_held}; lower --holdout or raise --num-clips")
        cut = len(clips) - n_held
        train += clips[: cut - 1 if n_held else cut]
        held += clips[cut:]
    if not train:
        raise ConfigError(f"--data {data!r} names no source; pass e.g. bigbuckbunny,synthetic or a video directory")
    empty = torch.empty(0, frames, 3, height, width)
    return torch.stack(train), torch.stack(held) if held else empty


def random_crops(clips: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``crop x crop`` window per clip (the same for all its frames) and a random
    horizontal flip: ``[B, F, 3, H, W] -> [B, F, 3, crop, crop]``."""
    out = []
    h, w = clips.shape[-2:]
    for clip in clips:
        top = int(torch.randint(h - crop + 1, (1,), generator=generator))
        left = int(torch.randint(w - crop + 1, (1,), generator=generator))
        window = clip[..., top : top + crop, left : left + crop]
        out.append(window.flip(-1) if bool(torch.rand(1, generator=generator) < 0.5) else window)
    return torch.stack(out)


# --------------------------------------------------------------------------- model directory


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_model_with_vae(source: str | os.PathLike, vae: torch.nn.Module, out: str | os.PathLike) -> Path:
    """Write ``out``: the model directory ``source`` with ``vae/`` replaced by ``vae`` (``save_pretrained``).

    The other components are hard-linked (copied across file systems); the directory appears
    atomically (written under a temporary name, then renamed).
    """
    src = resolve_model_dir(source)
    with atomic_directory(out) as tmp:
        shutil.copytree(src, tmp, copy_function=_link_or_copy, dirs_exist_ok=True,
                        ignore=lambda d, names: ["vae"] if Path(d) == src else [])
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
    return Path(out)


# --------------------------------------------------------------------------- training


def vae_loss(vae, video: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction loss of ``video [B, F, 3, H, W]`` through a posterior sample.

    Returns ``{"l1", "kl", "loss"}`` (``loss = l1 + kl_weight * kl``, KL per latent element).
    """
    b, f = video.shape[:2]
    x = video.flatten(0, 1)
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(x.device)
    recon = vae.decode(z, num_frames=f).sample
    l1 = (recon - x).abs().mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return {"l1": l1, "kl": kl, "loss": l1 + kl_weight * kl}


@torch.no_grad()
def reconstruction_psnr(vae, clips: torch.Tensor) -> float:
    """Mean PSNR (dB, range [-1, 1]) of ``clips [N, F, 3, H, W]`` through encode-mode-decode."""
    psnrs = []
    for clip in clips:
        recon = vae.decode(vae.encode(clip).latent_dist.mode(), num_frames=clip.shape[0]).sample.clamp(-1, 1)
        mse = (recon - clip).pow(2).mean().clamp_min(1e-12)
        psnrs.append(float(10 * torch.log10(4 / mse)))
    return sum(psnrs) / len(psnrs)


def train_vae(cfg: VAEConfig, model=None, progress: bool = True) -> dict:
    """Train the model's VAE; writes ``OUT/model`` and returns the last metrics row (with held-out PSNR)."""
    cfg.validate()
    acc = Accelerator()
    model = model if model is not None else load_model(cfg.model)
    out = Path(cfg.out)
    train_clips, held_clips = split_clips(cfg.data, cfg.frames, cfg.height, cfg.width, cfg.num_clips, cfg.stride, cfg.seed, cfg.holdout)
    log.info("VAE: %d training clips, %d held out, %d frames at %dx%d", len(train_clips), len(held_clips), cfg.frames, cfg.height, cfg.width)
    vae = model.vae.requires_grad_(True).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    vae, opt = acc.prepare(vae, opt)
    ema = EMAModel(acc.unwrap_model(vae).parameters(), decay=cfg.ema_decay)
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)

    def one_step() -> dict[str, torch.Tensor]:
        video = train_clips[torch.randint(len(train_clips), (cfg.batch_size,), generator=rng)]
        if cfg.crop:
            video = random_crops(video, cfg.crop, rng)
        terms = vae_loss(vae, video.to(acc.device), cfg.kl_weight, rng)
        acc.backward(terms["loss"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(acc.unwrap_model(vae).parameters())
        return terms

    step = begin(acc, cfg, out, ema, rng)
    loop = run_steps(acc, cfg, out, step, ema, rng, one_step, desc="vae", progress=progress, shown="l1")
    row, metrics = loop.row, loop.metrics
    if acc.is_main_process:
        final = acc.unwrap_model(vae)
        ema.copy_to(final.parameters())
        final.eval().requires_grad_(False)
        if len(held_clips):
            row["held_out_psnr"] = round(reconstruction_psnr(final, held_clips), 3)
        row["train_seconds"] = round(loop.seconds, 1)
        save_model_with_vae(model.source, final, out / "model")
        metrics.write(row)
    acc.wait_for_everyone()
    metrics.close()
    return row


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(
        VAEConfig,
        "python -m training.vae",
        "Train a model's temporal VAE to reconstruct video frames (the teacher for training.decoder).",
        (
            "  python -m training.vae --model tiny --out runs/vae                      # ~5 min on 2 CPU cores\n"
            "  python -m training.vae --model tiny --data bigbuckbunny --max-steps 50 --out /tmp/vae\n"
            "  python -m training.decoder --model runs/vae/model --out runs/decoder     # then distil from it"
        ),
        help_text={
            **CLIP_OPTION_HELP,
            "model": "diffusers SVD directory, 'tiny' or 'svd-random'",
            "out": "run directory: model/ (the model with the trained vae/), checkpoints/, metrics.*",
            "lr": "learning rate (AdamW)",
        },
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(VAEConfig, args)
    cfg.validate()
    row = train_vae(cfg, progress=not args.no_progress)
    print(json.dumps({"out": str(Path(cfg.out) / "model"), **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
