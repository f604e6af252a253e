"""Resumable training state and the final UNet, both written atomically.

A checkpoint is a directory ``checkpoints/step-NNNNNNN`` holding ``accelerate``'s state
(generator and heads as safetensors, optimisers, per-process RNG states) plus
``extra.safetensors`` (EMA shadow weights, the loop's data/noise generator state) and
``state.json`` (step, EMA step). It is written under a temporary name and renamed when complete;
``checkpoints/latest`` (a one-line text file, replaced atomically) names the newest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from contract.atomic import write_bytes_atomic
from contract.errors import ToolkitError

log = logging.getLogger(__name__)


class CheckpointError(ToolkitError):
    """A checkpoint to resume from is missing or incomplete."""


def save_checkpoint(accelerator, root: Path, step: int, ema, rng: torch.Generator, keep: int = 2) -> Path:
    """Write the training state at ``step`` under ``root``; keep the newest ``keep`` checkpoints.

    Every process must call this (accelerate writes per-process RNG states).
    """
    root = Path(root)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        extra = {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
        extra["rng"] = rng.get_state()
        save_file(extra, str(tmp / "extra.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "ema_step": ema.optimization_step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_bytes_atomic(root / "latest", final.name.encode())
        for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(accelerator, path: Path, ema, rng: torch.Generator) -> int:
    """Restore the state saved by :func:`save_checkpoint`; returns the step to continue from."""
    path = Path(path)
    if not (path / "state.json").is_file() or not (path / "extra.safetensors").is_file():
        raise CheckpointError(f"{path} is not a complete training checkpoint (state.json / extra.safetensors missing)")
    accelerator.load_state(str(path))
    state = json.loads((path / "state.json").read_text())
    extra = load_file(str(path / "extra.safetensors"))
    for i, p in enumerate(ema.shadow_params):
        p.data.copy_(extra[f"ema.{i}"].to(p.device))
    ema.optimization_step = int(state["ema_step"])
    rng.set_state(extra["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def save_unet(unet: torch.nn.Module, out: Path) -> Path:
    """``save_pretrained`` (diffusers layout, safetensors) into ``out``, atomically replacing it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    unet.save_pretrained(tmp, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
