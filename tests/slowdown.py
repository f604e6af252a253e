"""Test-only slowdowns for the latency gate's sensitivity checks (never shipped in the package).

:func:`install` makes ONE stage of the working tree's pipeline slower by a FRACTION of that
stage's own work, with real extra CPU work (a busy loop) rather than a sleep: each timed call's
CPU time is measured and followed by ``fraction x`` that much CPU time of spinning, so the
slowdown scales with the stage on any machine and under any load, as a real regression in that
code would. Both are measured on the process CPU clock (:func:`time.process_time`), read
directly: the gate's worker points ``time.perf_counter`` at the CPU clock during its CPU-timed
clips, and the injected work must not depend on which clock a clip is timed by; nor does it grow
when another process preempts the stage (wall time would).

Stages (as the gate names them): ``preprocess``, ``image_encoder``, ``vae_encoder``, ``unet``,
``vae_decoder`` (each engine call of that network), ``sampler`` (the denoising loop outside its
UNet calls) and ``video`` (writing the file): ``contract.specs.STAGES`` and ``video``. They are
written out here because this module is installed into other revisions' trees, which may predate
``contract``.

The gate's worker processes load it through ``tests/gate_inject/sitecustomize.py`` when
``SFV_TEST_SLOWDOWN=STAGE:FRACTION`` is set in their environment.
"""

from __future__ import annotations

import contextlib
import functools
import time

STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "sampler", "vae_decoder", "video")
_unet_seconds = [0.0]  # UNet engine CPU time, so that the sampler slowdown can leave it out
cpu_clock = time.process_time  # this process's CPU seconds (all threads)


def spin(seconds: float) -> None:
    """Busy-wait (CPU work, not a sleep) for ``seconds`` of this process's CPU time."""
    end = cpu_clock() + seconds
    x = 0
    while cpu_clock() < end:
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
        start = cpu_clock()
        out = fn(*args, **kwargs)
        elapsed = cpu_clock() - start
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
                start = cpu_clock()
                yield
                if name == "preprocess":
                    spin(fraction * (cpu_clock() - start))

        runtime.pipeline._timed = timed
    elif stage == "sampler":
        original_run = engines.base.Engine.run

        def counted_run(self, inputs):
            start = cpu_clock()
            try:
                return original_run(self, inputs)
            finally:
                if self.spec.name == "unet":
                    _unet_seconds[0] += cpu_clock() - start

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
