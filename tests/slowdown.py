"""Test-only slowdowns for the latency gate's sensitivity checks (never shipped in the package).

:func:`install` makes ONE stage of the working tree's pipeline slower by a FRACTION of that
stage's own time, with real extra CPU work (a busy loop) rather than a sleep: each timed call
is measured and followed by ``fraction x`` its duration of spinning, so the slowdown scales with
the stage on any machine and under any load, as a real regression in that code would.

Stages (as the gate names them): ``preprocess``, ``image_encoder``, ``vae_encoder``, ``unet``,
``vae_decoder`` (each engine call of that network), ``glue`` (the sampler outside its UNet
calls) and ``video`` (writing the file).

The gate's worker processes load it through ``tests/gate_inject/sitecustomize.py`` when
``SFV_TEST_SLOWDOWN=STAGE:FRACTION`` is set in their environment.
"""

from __future__ import annotations

import contextlib
import functools
import time

STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "glue", "vae_decoder", "video")
_unet_seconds = [0.0]  # UNet engine time, so that the glue slowdown can leave it out


def spin(seconds: float) -> None:
    """Busy-wait (CPU work, not a sleep) for ``seconds`` of wall time."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def parse(text: str) -> tuple[str, float]:
    stage, _, fraction = text.partition(":")
    if stage not in STAGES:
        raise ValueError(f"SFV_TEST_SLOWDOWN: unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    return stage, float(fraction)


def _slowed(fn, fraction: float, own_time=None):
    """``fn`` followed by ``fraction x`` its own time of spinning (``own_time(elapsed)`` narrows that time)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        elapsed = time.perf_counter() - start
        spin(fraction * (own_time(elapsed) if own_time else elapsed))
        return out

    return wrapper


def install(stage: str, fraction: float) -> None:
    """Patch the working tree's runtime so that ``stage`` takes ``1 + fraction`` times as long."""
    import engines.base
    import runtime.pipeline
    import runtime.video

    if stage in ("image_encoder", "vae_encoder", "unet", "vae_decoder"):
        original_run = engines.base.Engine.run

        def run(self, inputs):
            if self.spec.name != stage:
                return original_run(self, inputs)
            return _slowed(original_run, fraction)(self, inputs)

        engines.base.Engine.run = run
    elif stage == "preprocess":
        original_timed = runtime.pipeline._timed

        @contextlib.contextmanager
        def timed(timings, name):
            with original_timed(timings, name):
                start = time.perf_counter()
                yield
                if name == "preprocess":
                    spin(fraction * (time.perf_counter() - start))

        runtime.pipeline._timed = timed
    elif stage == "glue":
        original_run = engines.base.Engine.run

        def counted_run(self, inputs):
            start = time.perf_counter()
            try:
                return original_run(self, inputs)
            finally:
                if self.spec.name == "unet":
                    _unet_seconds[0] += time.perf_counter() - start

        engines.base.Engine.run = counted_run
        original_sample = runtime.pipeline.sample_euler

        def sample(*args, **kwargs):
            before = _unet_seconds[0]
            return _slowed(original_sample, fraction, lambda elapsed: elapsed - (_unet_seconds[0] - before))(*args, **kwargs)

        runtime.pipeline.sample_euler = sample
    elif stage == "video":
        runtime.video.write_video = _slowed(runtime.video.write_video, fraction)
    else:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
