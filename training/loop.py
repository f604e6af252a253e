"""The step loop that ``training.vae`` and ``training.decoder`` share: resume, progress, metrics, checkpoints.

Each trainer supplies one optimiser step (``step_fn() -> {term: scalar tensor}``); the loop owns
everything around it, so that both trainers resume, log and stop alike:

- :func:`begin` resumes from ``OUT/checkpoints`` when asked and writes ``OUT/config.json``;
- :func:`run_steps` calls ``step_fn`` until ``max_steps`` (or ``max_minutes`` of wall time),
  writes a row of running means every ``log_every`` steps to ``metrics.jsonl``/``.csv``,
  shows a progress bar on a terminal, checkpoints every ``save_every`` steps and once at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.sfv import MetricsLog, progress_bar

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    """Where the loop stopped: the step, the last metrics row, the training wall time and the open log."""

    step: int
    row: dict
    seconds: float
    metrics: MetricsLog


def begin(acc, cfg, out: Path, ema, rng: torch.Generator) -> int:
    """The step to start from (the latest checkpoint's with ``cfg.resume``, else 0); writes ``OUT/config.json``."""
    step = 0
    if cfg.resume:
        path = latest_checkpoint(out / "checkpoints")
        if path is not None:
            step = load_checkpoint(acc, path, ema, rng)
        else:
            log.info("no checkpoint under %s; starting afresh", out / "checkpoints")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return step


def run_steps(acc, cfg, out: Path, step: int, ema, rng: torch.Generator, step_fn: Callable[[], Mapping[str, torch.Tensor]],
              *, desc: str, progress: bool, shown: str, extra: Callable[[], dict] | None = None) -> LoopResult:
    """Run ``step_fn`` from ``step`` to ``cfg.max_steps``; ``shown`` is the term on the bar, ``extra()`` adds to each row.

    ``cfg`` needs ``max_steps``, ``max_minutes``, ``log_every`` and ``save_every``. The caller writes
    its final rows to ``result.metrics`` and closes it.
    """
    metrics = MetricsLog(out, acc.is_main_process)
    bar = progress_bar(cfg.max_steps, desc, progress and acc.is_local_main_process, initial=step)
    start, row, running, count = time.perf_counter(), {}, {}, 0
    while step < cfg.max_steps:
        terms = step_fn()
        step += 1
        count += 1
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        bar.update(1)
        elapsed = time.perf_counter() - start
        out_of_time = bool(cfg.max_minutes) and elapsed > cfg.max_minutes * 60
        if step % cfg.log_every == 0 or step == cfg.max_steps or out_of_time:
            row = {"step": step, **{k: v / count for k, v in running.items()}, **(extra() if extra else {}),
                   "seconds": round(elapsed, 3)}
            running, count = {}, 0
            metrics.write(row)
            bar.set_postfix({shown: f"{row[shown]:.4f}"})
        if out_of_time:
            log.info("stopping after %.1f minutes at step %d", cfg.max_minutes, step)
            break
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.max_steps:
            save_checkpoint(acc, out / "checkpoints", step, ema, rng)
    bar.close()
    seconds = time.perf_counter() - start
    save_checkpoint(acc, out / "checkpoints", step, ema, rng)
    return LoopResult(step, row, seconds, metrics)
