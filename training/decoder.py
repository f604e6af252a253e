"""Distil a fast temporal decoder (:mod:`networks.fast_decoder`) from a model's frozen VAE decoder.

Clips ``[F, 3, H, W]`` from the offline sources are encoded by the model's VAE encoder (the
latent's mode, divided by nothing: the SVD decoder's input is ``latents / scaling_factor``);
the frozen temporal decoder (the teacher) decodes them once. The student learns, on random
crops, ``L1(student, teacher) + w_t L1(diff_t student, diff_t teacher)`` (frame differences, so
that it keeps the teacher's motion and does not flicker), optionally ``+ w_o L1(student,
original frames)`` and a light hinge adversarial term against a small patch discriminator
(off by default). Adam, cosine learning-rate decay, EMA of the weights, ``accelerate``,
resumable atomic checkpoints (:mod:`training.checkpoint`).

Held-out clips (never trained on) give PSNR and SSIM against the teacher, a temporal
figure (mean |frame difference - the original frames' difference|, student and teacher) and
the same for a trivial baseline: nearest-neighbour upsampling of the latents through a fixed
least-squares linear map to RGB, fitted on the training clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import nn
from torch.nn import functional as F

from contract.cli import run_cli
from networks.fast_decoder import TEMPORAL_LINKS, FastDecoder, FastDecoderConfig, save_fast_decoder
from networks.models import load_model
from training.loop import begin, run_steps
from training.options import CLIP_OPTION_HELP, config_from_args, config_parser
from training.sfv import ConfigError
from training.vae import split_clips

log = logging.getLogger(__name__)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).split(",") if v.strip())


@dataclass(frozen=True)
class DecoderConfig:
    """Options of the distillation and their defaults (sized for the tiny model on a CPU)."""

    model: str = "tiny"  # teacher: diffusers SVD directory (its vae/), 'tiny' or 'svd-random'
    data: str = "bigbuckbunny,synthetic"  # comma-separated: video directories, 'bigbuckbunny', 'synthetic'
    out: str = "runs/decoder"  # writes OUT/decoder (config.json + model.safetensors), eval.json, metrics
    frames: int = 4  # frames per clip
    height: int = 64  # clip size in pixels (multiples of the VAE's scale factor)
    width: int = 64
    # Whole frames by default: on the tiny model, in the same wall time, whole 64x64 frames gave
    # 29.8 dB / SSIM 0.859 against 28.9 dB / 0.844 for 32-px crops (docs/decoder.md). Crops are
    # for sizes whose whole frames do not fit (SVD's 576x1024: --crop 256).
    crop: int = 0  # train on random crops of this many pixels (a multiple of the scale factor; 0: whole frames)
    num_clips: int = 64  # clips per source
    stride: int = 1
    holdout: float = 0.25  # fraction of each source's clips held out (same split as training.vae)
    channels: str = "64,64,48,32"  # student widths: latent resolution, then after each 2x upsampling
    blocks: str = "2,2,1,1"  # residual blocks per stage
    temporal: str = "memory"  # temporal link: memory | tconv | none
    batch_size: int = 4  # clips per step
    max_steps: int = 1500
    max_minutes: float = 0.0  # also stop after this wall-clock time (0: no limit)
    lr: float = 2e-3  # Adam; cosine decay to lr/20 over max_steps
    temporal_weight: float = 0.5  # weight of the frame-difference term
    original_weight: float = 0.0  # weight of L1 against the original frames
    ssim_weight: float = 1.0  # weight of the (1 - SSIM) term against the teacher's frames (0: off)
    adv_weight: float = 0.0  # weight of the hinge adversarial term (0: off)
    lr_d: float = 2e-4  # patch discriminator learning rate (with --adv-weight)
    ema_decay: float = 0.99
    seed: int = 0
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    log_every: int = 20
    resume: bool = False  # continue from OUT/checkpoints/latest

    def student_config(self, latent_channels: int) -> FastDecoderConfig:
        return FastDecoderConfig(latent_channels=latent_channels, channels=_ints(self.channels), blocks=_ints(self.blocks), temporal=self.temporal)

    def validate(self, scale: int | None = None) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range option (``scale``: the VAE's, once known)."""
        try:
            channels, blocks = _ints(self.channels), _ints(self.blocks)
        except ValueError:
            raise ConfigError(f"--channels {self.channels!r} / --blocks {self.blocks!r}: comma-separated integers, e.g. 64,64,48,32") from None
        checks = [
            ("frames", self.frames >= 2, "must be >= 2 (the temporal term needs two frames)"),
            ("num_clips", self.num_clips >= 2, "must be >= 2"),
            ("stride", self.stride >= 1, "must be >= 1"),
            ("holdout", 0 < self.holdout < 1, "must be in (0, 1): evaluation needs held-out clips"),
            ("channels", len(channels) >= 1 and min(channels) >= 1, "comma-separated positive widths"),
            ("blocks", len(blocks) == len(channels) and min(blocks) >= 1, "one positive count per --channels entry"),
            ("temporal", self.temporal in TEMPORAL_LINKS, f"must be one of {', '.join(TEMPORAL_LINKS)}"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("max_steps", self.max_steps >= 1, "must be >= 1"),
            ("max_minutes", self.max_minutes >= 0, "must be >= 0"),
            ("lr", 0 < self.lr <= 1, "must be in (0, 1]"),
            ("lr_d", 0 < self.lr_d <= 1, "must be in (0, 1]"),
            ("temporal_weight", self.temporal_weight >= 0, "must be >= 0"),
            ("original_weight", self.original_weight >= 0, "must be >= 0"),
            ("ssim_weight", self.ssim_weight >= 0, "must be >= 0"),
            ("adv_weight", self.adv_weight >= 0, "must be >= 0"),
            ("ema_decay", 0 <= self.ema_decay < 1, "must be in [0, 1)"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
        ]
        if scale:
            checks += [
                ("channels", 2 ** (len(channels) - 1) == scale, f"needs {int(math.log2(scale)) + 1} entries for this VAE's {scale}x upsampling"),
                ("height", self.height >= scale and self.height % scale == 0, f"must be a positive multiple of {scale}"),
                ("width", self.width >= scale and self.width % scale == 0, f"must be a positive multiple of {scale}"),
                ("crop", self.crop == 0 or (self.crop % scale == 0 and scale <= self.crop <= min(self.height, self.width)),
                 f"must be 0 or a multiple of {scale} no larger than the clip"),
                ("crop", not self.ssim_weight or min(self.crop or self.height, self.crop or self.width) >= SSIM_WINDOW,
                 f"must be 0 or at least {SSIM_WINDOW} px with --ssim-weight (the SSIM window)"),
            ]
        for name, ok, msg in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {msg}")


# --------------------------------------------------------------------------- data


@dataclass
class DecoderData:
    """One split: ``clips`` (original frames) and ``teacher`` ``[N, F, 3, H, W]``, ``latents [N, F, C, h, w]`` (unscaled)."""

    clips: torch.Tensor
    latents: torch.Tensor
    teacher: torch.Tensor


@torch.no_grad()
def encode_split(vae, clips: torch.Tensor) -> DecoderData:
    """Encode ``clips [N, F, 3, H, W]`` (mode of the posterior, unscaled) and decode them with the frozen teacher."""
    latents, teacher = [], []
    for clip in clips:
        z = vae.encode(clip).latent_dist.mode()
        latents.append(z)
        teacher.append(vae.decode(z, num_frames=clip.shape[0]).sample)
    return DecoderData(clips, torch.stack(latents), torch.stack(teacher))


def random_crop(batch: DecoderData, index: torch.Tensor, crop: int, scale: int, generator: torch.Generator) -> DecoderData:
    """The clips ``index`` cut to one random ``crop``-pixel window each (aligned to the latent grid)."""
    data = DecoderData(batch.clips[index], batch.latents[index], batch.teacher[index])
    if not crop:
        return data
    c, out = crop // scale, []
    h, w = data.latents.shape[-2:]
    for i in range(len(index)):
        top = int(torch.randint(h - c + 1, (1,), generator=generator))
        left = int(torch.randint(w - c + 1, (1,), generator=generator))
        pix = (slice(top * scale, (top + c) * scale), slice(left * scale, (left + c) * scale))
        out.append((data.clips[i][..., pix[0], pix[1]], data.latents[i][..., top : top + c, left : left + c], data.teacher[i][..., pix[0], pix[1]]))
    return DecoderData(*(torch.stack(t) for t in zip(*out)))


# --------------------------------------------------------------------------- losses


def frame_diff(x: torch.Tensor) -> torch.Tensor:
    """``[B, F, ...] -> [B, F-1, ...]``: consecutive frame differences."""
    return x[:, 1:] - x[:, :-1]


class PatchDiscriminator(nn.Module):
    """A small PatchGAN on frames ``[N, 3, H, W]`` -> logits ``[N, 1, H/4, W/4]`` (no normalisation)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


SSIM_SIGMA = 1.5  # Wang et al. 2004's Gaussian window, as scikit-image's gaussian_weights=True
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # 11: scipy's Gaussian filter truncated at 3.5 sigma


def ssim_torch(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM of frames ``[N, C, H, W]`` (Wang et al. 2004, Eq. 13), differentiable.

    The same figure as :func:`ssim` (scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``): local statistics under an
    11x11 Gaussian window, constants ``(0.01 R)^2`` and ``(0.03 R)^2``, averaged over the pixels
    whose window lies inside the frame (scikit-image crops the same border) and over channels.
    """
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=a.dtype, device=a.device)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    channels = a.shape[1]
    window = (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


class DistillationLoss:
    """``L1(s, t) + w_t L1(diff s, diff t) + w_o L1(s, x) + w_s (1 - SSIM(s, t)) [+ w_adv (-D(s))]`` on clips ``[B, F, 3, H, W]``."""

    def __init__(self, temporal_weight: float = 0.5, original_weight: float = 0.0, adv_weight: float = 0.0,
                 ssim_weight: float = 0.0):
        self.temporal_weight, self.original_weight, self.adv_weight = temporal_weight, original_weight, adv_weight
        self.ssim_weight = ssim_weight

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, original: torch.Tensor, disc: nn.Module | None = None) -> dict[str, torch.Tensor]:
        terms = {"rec": (student - teacher).abs().mean(), "temporal": (frame_diff(student) - frame_diff(teacher)).abs().mean()}
        loss = terms["rec"] + self.temporal_weight * terms["temporal"]
        if self.original_weight:
            terms["original"] = (student - original).abs().mean()
            loss = loss + self.original_weight * terms["original"]
        if self.ssim_weight:
            # The teacher's frames are clamped to the displayed range, as the metric sees them.
            terms["ssim"] = 1 - ssim_torch(student.flatten(0, 1), teacher.clamp(-1, 1).flatten(0, 1))
            loss = loss + self.ssim_weight * terms["ssim"]
        if self.adv_weight and disc is not None:
            terms["g_adv"] = -disc(student.flatten(0, 1)).mean()
            loss = loss + self.adv_weight * terms["g_adv"]
        terms["loss"] = loss
        return terms


# --------------------------------------------------------------------------- evaluation


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame PSNR (dB) of frames ``[..., 3, H, W]`` in [-1, 1] (clamped; peak-to-peak 2)."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).flatten(-3).mean(-1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame SSIM (Wang et al. 2004: Gaussian window sigma 1.5) with scikit-image, frames in [-1, 1]."""
    # optional: skimage (the train extra)
    from skimage.metrics import structural_similarity

    fa = a.clamp(-1, 1).reshape(-1, *a.shape[-3:]).permute(0, 2, 3, 1).double().numpy()
    fb = b.clamp(-1, 1).reshape(-1, *b.shape[-3:]).permute(0, 2, 3, 1).double().numpy()
    values = [
        structural_similarity(x, y, channel_axis=-1, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for x, y in zip(fa, fb)
    ]
    return float(np.mean(values))


def temporal_error(frames: torch.Tensor, original: torch.Tensor) -> float:
    """Mean |frame difference of ``frames`` - that of ``original``| over clips ``[N, F, 3, H, W]`` (clamped to [-1, 1])."""
    return float((frame_diff(frames.clamp(-1, 1)) - frame_diff(original)).abs().mean())


class LinearBaseline(nn.Module):
    """Nearest-neighbour upsampling of ``latent [n, C, h, w]`` through a fixed linear map ``C -> RGB``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scale: int):
        super().__init__()
        self.register_buffer("weight", weight)  # [3, C]
        self.register_buffer("bias", bias)  # [3]
        self.scale = scale

    @classmethod
    def fit(cls, latents: torch.Tensor, frames: torch.Tensor, scale: int) -> "LinearBaseline":
        """Least squares from each latent pixel to the mean of the ``scale x scale`` frame pixels it covers
        (the same minimiser as against every covered pixel); ``latents [..., C, h, w]``, ``frames [..., 3, H, W]``."""
        x = latents.reshape(-1, *latents.shape[-3:]).double()
        y = F.avg_pool2d(frames.reshape(-1, *frames.shape[-3:]).double(), scale)
        x = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]), torch.ones(x.numel() // x.shape[1], 1, dtype=x.dtype)], 1)
        y = y.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(x, y).solution  # [C + 1, 3]
        return cls(solution[:-1].T.float().contiguous(), solution[-1].float().contiguous(), scale)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("oc,nchw->nohw", self.weight, latent) + self.bias[:, None, None]
        return F.interpolate(rgb, scale_factor=float(self.scale), mode="nearest")


@torch.no_grad()
def evaluate(decoder: nn.Module, data: DecoderData) -> dict[str, float]:
    """PSNR/SSIM vs the teacher's frames, the temporal figure vs the original frames (and the teacher's)."""
    frames = torch.stack([decoder(z) for z in data.latents])
    teacher_t = temporal_error(data.teacher, data.clips)
    student_t = temporal_error(frames, data.clips)
    return {
        "psnr": round(psnr(frames, data.teacher), 3),
        "ssim": round(ssim(frames, data.teacher), 4),
        "psnr_vs_original": round(psnr(frames, data.clips), 3),
        "temporal": round(student_t, 5),
        "teacher_temporal": round(teacher_t, 5),
        "temporal_ratio": round(student_t / teacher_t, 3) if teacher_t > 0 else float("nan"),
    }


# --------------------------------------------------------------------------- training


def lr_factor(step: int, max_steps: int, floor: float = 0.05) -> float:
    """Cosine decay from 1 to ``floor`` over ``max_steps``."""
    t = min(step / max(max_steps, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def prepare_data(cfg: DecoderConfig, vae) -> tuple[DecoderData, DecoderData]:
    """Training and held-out splits encoded by the model's VAE and decoded by its frozen decoder."""
    train_clips, held_clips = split_clips(cfg.data, cfg.frames, cfg.height, cfg.width, cfg.num_clips, cfg.stride, cfg.seed, cfg.holdout)
    if not len(held_clips):
        raise ConfigError(f"--holdout {cfg.holdout}: no clip held out of {len(train_clips)}; raise --num-clips or --holdout")
    log.info("decoder: encoding %d training and %d held-out clips of %d frames at %dx%d", len(train_clips), len(held_clips), cfg.frames, cfg.height, cfg.width)
    return encode_split(vae, train_clips), encode_split(vae, held_clips)


def train_decoder(cfg: DecoderConfig, model=None, data: tuple[DecoderData, DecoderData] | None = None, progress: bool = True) -> dict:
    """Distil the student; writes ``OUT/decoder`` and ``OUT/eval.json`` and returns the evaluation.

    ``model`` (a loaded :class:`networks.models.SVDModel`) and ``data`` (``prepare_data``'s
    splits) may be passed to skip loading them.
    """
    cfg.validate()
    acc = Accelerator()
    model = model if model is not None else load_model(cfg.model)
    vae = model.vae.eval().requires_grad_(False)
    scale = model.config.vae_scale_factor
    cfg.validate(scale)
    out = Path(cfg.out)
    t_data = time.perf_counter()
    train, held = data if data is not None else prepare_data(cfg, vae)
    t_data = time.perf_counter() - t_data

    with torch.random.fork_rng():  # the student's initial weights come from the seed alone
        torch.manual_seed(cfg.seed)
        student = FastDecoder(cfg.student_config(model.config.latent_channels))
        disc = PatchDiscriminator() if cfg.adv_weight else None
    student.set_latent_stats(train.latents)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.max_steps))
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99))
        student, disc, opt, opt_d, sched = acc.prepare(student, disc, opt, opt_d, sched)
    else:
        student, opt, sched = acc.prepare(student, opt, sched)
    ema = EMAModel(acc.unwrap_model(student).parameters(), decay=cfg.ema_decay)
    loss_fn = DistillationLoss(cfg.temporal_weight, cfg.original_weight, cfg.adv_weight, cfg.ssim_weight)
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    unwrap = acc.unwrap_model

    def one_step() -> dict[str, torch.Tensor]:
        batch = random_crop(train, torch.randint(len(train.latents), (cfg.batch_size,), generator=rng), cfg.crop, scale, rng)
        z, teacher, original = (t.to(acc.device) for t in (batch.latents, batch.teacher, batch.clips))
        fake = student(z.flatten(0, 1), frames=z.shape[1]).unflatten(0, z.shape[:2])
        if disc is not None:  # D step on detached frames: hinge (real = the teacher's frames)
            d_loss = F.relu(1 - disc(teacher.flatten(0, 1))).mean() + F.relu(1 + disc(fake.detach().flatten(0, 1))).mean()
            acc.backward(d_loss)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        terms = loss_fn(fake, teacher, original, disc)
        if disc is not None:
            terms["d_loss"] = d_loss.detach()
        acc.backward(terms["loss"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if disc is not None:
            opt_d.zero_grad(set_to_none=True)  # the generator term's gradients on D are not used
        ema.step(unwrap(student).parameters())
        return terms

    step = begin(acc, cfg, out, ema, rng)
    loop = run_steps(acc, cfg, out, step, ema, rng, one_step, desc="decoder", progress=progress, shown="rec",
                     extra=lambda: {"lr": sched.get_last_lr()[0]})
    step, train_seconds, metrics = loop.step, loop.seconds, loop.metrics
    result: dict = {}
    if acc.is_main_process:
        final = FastDecoder(unwrap(student).config)
        final.load_state_dict(unwrap(student).state_dict())
        ema.copy_to(final.parameters())
        final.eval().requires_grad_(False)
        save_fast_decoder(final, out / "decoder")
        baseline = LinearBaseline.fit(train.latents, train.teacher, scale)
        result = {
            "steps": step,
            "train_seconds": round(train_seconds, 1),
            "data_seconds": round(t_data, 1),
            "held_out_clips": len(held.latents),
            "student": evaluate(final, held),
            "baseline": evaluate(baseline, held),
            "parameters": sum(p.numel() for p in final.parameters()),
            "config": final.config.to_json(),
        }
        (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        metrics.write({"step": step, **{f"held_out_{k}": v for k, v in result["student"].items()}, "seconds": round(train_seconds, 3)})
    acc.wait_for_everyone()
    metrics.close()
    return result


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(
        DecoderConfig,
        "python -m training.decoder",
        (
            "Distil a fast temporal decoder (small convolutions, a cheap link between frames) from a model's frozen "
            "VAE decoder, evaluate it on held-out clips against the teacher and a linear baseline, and write "
            "OUT/decoder for `python -m export.onnx --fast-decoder OUT`."
        ),
        (
            "  python -m training.vae --model tiny --out runs/vae                    # a tiny teacher that reconstructs\n"
            "  python -m training.decoder --model runs/vae/model --out runs/decoder\n"
            "  python -m training.decoder --model runs/vae/model --temporal tconv --out runs/decoder-tconv\n"
            "  python -m training.decoder --model ~/models/svd-img2vid --data ~/clips --height 576 --width 1024 \\\n"
            "      --crop 256 --frames 14 --batch-size 2 --max-steps 20000 --out runs/decoder   # real SVD, on a GPU\n"
            "  accelerate launch -m training.decoder ...                             # several processes\n"
            "\nOUT holds decoder/ (config.json + model.safetensors), eval.json (held-out PSNR, SSIM, temporal\n"
            "figure, baseline), metrics.jsonl/csv and checkpoints/ (--resume continues from the latest)."
        ),
        help_text={
            **CLIP_OPTION_HELP,
            "model": "teacher: diffusers SVD directory (e.g. training.vae's OUT/model), 'tiny' or 'svd-random'",
            "out": "run directory",
            "channels": "student widths, latent resolution first",
            "blocks": "residual blocks per stage",
            "temporal": "temporal link: memory (previous frame), tconv (previous and next), none",
            "temporal_weight": "weight of the frame-difference term",
            "original_weight": "weight of L1 against the original frames",
            "ssim_weight": "weight of the (1 - SSIM) term against the teacher's frames (the held-out SSIM's own formula)",
            "adv_weight": "weight of the adversarial term (0: off)",
            "lr": "learning rate (Adam)",
            "lr_d": "learning rate of the patch discriminator (with --adv-weight)",
        },
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@run_cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(DecoderConfig, args)
    cfg.validate()
    result = train_decoder(cfg, progress=not args.no_progress)
    if result:
        print(json.dumps({"out": str(Path(cfg.out) / "decoder"), **{k: result[k] for k in ("steps", "train_seconds", "student", "baseline")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
