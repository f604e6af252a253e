"""Tiny-scale reproduction of SF-V's claim on the CPU: ``python -m training.reproduce --out runs/repro``.

Stages (each skipped when its output exists, so a run can be continued):

1. model: the built-in ``tiny`` model with its VAE's ``scaling_factor`` calibrated so that the
   scaled training latents have unit standard deviation (how SD/SVD chose 0.18215; the random
   tiny VAE's latents are far smaller, which would break EDM's sigma_data = 1).
2. data: synthetic motion clips (train and a held-out evaluation set with other seeds).
3. teacher: EDM denoising training of the tiny SVD UNet (:mod:`training.teacher`).
4. features: the offline feature network (:mod:`training.features`), trained once, frozen.
5. sfv / sfv-spatial: SF-V distillation with spatial+temporal heads and the spatial-only ablation.
6. eval: on the same conditioning frames and initial noise, the teacher with 25/16/4/1 Euler
   steps and both students with 1 step; Frechet distance to the held-out real clips, the
   real-vs-real floor, a motion ratio, and the closed-form Gaussian check of the distance.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from contract.atomic import write_json_atomic
from contract.cli import run_cli
from contract.environment import library_versions
from networks.models import builtin_model_dir, load_model
from training.data import encode_clips, load_latents, synthetic_clips
from training.features import train_feature_net
from training.frechet import frechet_distance, frechet_distance_features
from training.sampling import euler_sigmas, sample
from training.sfv import SFVConfig, train
from training.teacher import TeacherConfig, train_teacher

log = logging.getLogger(__name__)


def calibrate_model(out: Path, frames: int, size: int, seed: int = 0) -> Path:
    """Copy ``tiny`` to ``out`` with ``vae.scaling_factor`` set so the scaled latents have std 1."""
    if (out / "model_index.json").is_file():
        return out
    src = builtin_model_dir("tiny")
    model = load_model(src)
    clips, _ = synthetic_clips(32, frames, size, seed=seed + 99)
    std = float(encode_clips(model, clips).latents.std())
    factor = model.config.scaling_factor / std
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    cfg_path = tmp / "vae" / "config.json"
    vae_cfg = json.loads(cfg_path.read_text())
    vae_cfg["scaling_factor"] = factor
    cfg_path.write_text(json.dumps(vae_cfg, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("calibrated scaling_factor %.5f (latent std %.4f)", factor, std)
    return out


def closed_form_check(dim: int = 8, n: int = 20000, seed: int = 0) -> dict:
    """Frechet distance of samples from two known Gaussians vs the analytic value.

    For ``N(m1, diag(a^2))`` and ``N(m2, diag(b^2))`` the distance is ``||m1-m2||^2 + sum (a-b)^2``.
    """
    rng = np.random.default_rng(seed)
    m1, m2 = rng.normal(size=dim), rng.normal(size=dim)
    a, b = rng.uniform(0.5, 2, size=dim), rng.uniform(0.5, 2, size=dim)
    analytic = float(((m1 - m2) ** 2).sum() + ((a - b) ** 2).sum())
    exact = frechet_distance(m1, np.diag(a**2), m2, np.diag(b**2))
    sampled = frechet_distance_features(m1 + a * rng.normal(size=(n, dim)), m2 + b * rng.normal(size=(n, dim)))
    return {"dim": dim, "samples": n, "analytic": analytic, "from_moments": exact, "from_samples": sampled}


@torch.no_grad()
def generate(unet, latents, steps: int, sigma_min: float, sigma_max: float, seed: int, batch: int = 16) -> torch.Tensor:
    """Videos ``[N, F, 4, h, w]`` for every conditioning of ``latents`` with the deployed Euler sampler of ``steps``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.latents.shape, generator=g)  # same start for every method
    sigmas = euler_sigmas(steps, sigma_min, sigma_max)
    unet.eval()
    out = []
    for s in range(0, len(latents), batch):
        idx = torch.arange(s, min(s + batch, len(latents)))
        _, cond = latents.batch(idx)
        out.append(sample(unet, noise[idx], cond, sigmas))
    return torch.cat(out)


def motion(videos: torch.Tensor) -> float:
    """Mean absolute latent change between consecutive frames."""
    return float((videos[:, 1:] - videos[:, :-1]).abs().mean())


@run_cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/repro")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="pixels (square); multiple of 16 for tiny")
    p.add_argument("--train-clips", type=int, default=256)
    p.add_argument("--eval-clips", type=int, default=256)
    p.add_argument("--minutes", type=float, default=13.0, help="wall-clock budget of the teacher stage")
    p.add_argument("--sfv-steps", type=int, default=500, help="optimiser steps of each SF-V stage (equal for the ablation)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teacher-lr", type=float, default=5e-4)
    p.add_argument("--teacher-batch", type=int, default=4)
    p.add_argument("--lr-g", type=float, default=1e-4, help="SF-V generator lr (paper 1e-5 at 50K steps)")
    p.add_argument("--lr-d", type=float, default=1e-3, help="SF-V heads lr (paper 1e-4)")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--sfv-batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="print the Markdown table of OUT/results.json and exit")
    args = p.parse_args(argv)
    if args.report:
        print(markdown_table(json.loads((Path(args.out) / "results.json").read_text())))
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    timings: dict[str, float] = {}

    def stage(name):
        timings[name] = time.perf_counter()

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 1)
        log.info("stage %s: %.1f s", name, timings[name])

    # 1-2. Calibrated model and data.
    stage("model+data")
    model_dir = calibrate_model(out / "model", args.frames, args.size, args.seed)
    model = load_model(model_dir)
    cache = out / "cache"
    train_set = load_latents(model, "synthetic", args.frames, args.size, args.size, args.train_clips, seed=args.seed, cache_dir=cache)
    eval_set = load_latents(model, "synthetic", args.frames, args.size, args.size, args.eval_clips, seed=args.seed + 1, cache_dir=cache)
    done("model+data")
    mc = model.config

    # 3. Teacher.
    teacher_dir = out / "teacher" / "unet"
    if not teacher_dir.is_dir():
        stage("teacher")
        tcfg = TeacherConfig(model=str(model_dir), out=str(out / "teacher"), frames=args.frames, height=args.size, width=args.size,
                             batch_size=args.teacher_batch, max_steps=10**7, max_minutes=args.minutes, lr=args.teacher_lr, seed=args.seed, log_every=50)
        train_teacher(tcfg, model=load_model(model_dir), latents=train_set, progress=False)
        done("teacher")

    # 4. Feature network.
    stage("features")
    net, train_acc = train_feature_net(train_set.latents, train_set.labels, seed=args.seed)
    with torch.no_grad():
        eval_acc = float((net.classify(eval_set.latents).argmax(1) == eval_set.labels).float().mean())
    done("features")

    # 5. Students.
    for name, heads in (("sfv", "spatial+temporal"), ("sfv-spatial", "spatial")):
        if (out / name / "unet").is_dir():
            continue
        stage(name)
        scfg = SFVConfig(model=str(model_dir), unet=str(teacher_dir), out=str(out / name), frames=args.frames, height=args.size, width=args.size,
                         batch_size=args.sfv_batch, max_steps=args.sfv_steps, optimizer=args.optimizer,
                         lr_g=args.lr_g, lr_d=args.lr_d, heads=heads, seed=args.seed, log_every=25)
        train(scfg, model=load_model(model_dir, unet=teacher_dir), latents=train_set, progress=False)
        done(name)

    # 6. Evaluation on the held-out conditioning frames, same initial noise for every method.
    stage("eval")
    with torch.no_grad():
        real = net(eval_set.latents)
        floor = frechet_distance_features(net(train_set.latents[: len(eval_set)]), real)
    teacher = load_model(model_dir, unet=teacher_dir).unet
    rows = []
    methods = [("teacher", teacher, s) for s in (25, 16, 4, 1)]
    methods += [(n, load_model(model_dir, unet=out / n / "unet").unet, 1) for n in ("sfv", "sfv-spatial")]
    for name, unet, steps in methods:
        t0 = time.perf_counter()
        videos = generate(unet, eval_set, steps, mc.sigma_min, mc.sigma_max, seed=args.seed + 7)
        with torch.no_grad():
            fd = frechet_distance_features(net(videos), real)
        rows.append({"method": name, "steps": steps, "frechet": round(fd, 3), "motion": round(motion(videos), 4),
                     "unet_seconds": round(time.perf_counter() - t0, 2)})
        log.info("%s", rows[-1])
    done("eval")

    steps_done = {}
    for name in ("teacher", "sfv", "sfv-spatial"):
        lines = (out / name / "metrics.jsonl").read_text().splitlines() if (out / name / "metrics.jsonl").is_file() else []
        steps_done[name] = json.loads(lines[-1]) if lines else None
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads {args.threads}",
        "versions": library_versions(("torch", "diffusers", "accelerate")),
        "args": vars(args),
        "feature_net": {"train_accuracy": train_acc, "eval_accuracy": eval_acc},
        "real_vs_real_floor": round(floor, 3),
        "real_motion": round(motion(eval_set.latents), 4),
        "rows": rows,
        "closed_form_check": closed_form_check(),
        "last_metrics": steps_done,
        "stage_seconds": {k: v for k, v in timings.items()},
    }
    write_json_atomic(out / "results.json", result)
    print(json.dumps(result, indent=2))
    print(markdown_table(result))
    return 0


def markdown_table(result: dict) -> str:
    """The reproduction table of ``results.json`` in Markdown."""
    lines = [
        "| Method | Steps | Fréchet distance (offline features, lower is better) | Motion (mean abs frame-to-frame latent change) |",
        "|---|---|---|---|",
    ]
    names = {"teacher": "Teacher (EDM-trained tiny SVD UNet), Euler", "sfv": "SF-V student (spatial + temporal heads)",
             "sfv-spatial": "SF-V ablation: spatial heads only"}
    for row in result["rows"]:
        lines.append(f"| {names.get(row['method'], row['method'])} | {row['steps']} | {row['frechet']:.2f} | {row['motion']:.4f} |")
    lines.append(f"| Real held-out clips (reference) | – | {result['real_vs_real_floor']:.2f} (train vs held-out real) | {result['real_motion']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
