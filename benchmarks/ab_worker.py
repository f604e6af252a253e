"""The timing worker of ``python -m benchmarks.gate``: one process that times clips for one side.

This file is NOT imported: the gate reads its source and runs it with ``python -c`` in a process
whose working directory and ``PYTHONPATH`` start with the side's source tree, so that the side's
own ``runtime`` package is timed (base = an older revision, head = the working tree). It therefore
uses only the standard library and the public API that every revision has:
``VideoPipeline.from_bundle(...)``, ``pipe(image, ...)``, ``result.frames``, ``result.timings`` and
``runtime.video.write_video``; keyword arguments are matched to the side's signature (``frames``
or ``num_frames``, options that a revision lacks are dropped and reported), so an older base works.

Protocol (one JSON object per line): the first stdin line is the settings; the worker answers
``{"ready": ...}`` (or ``{"error": ...}`` and exits 3); then each ``run`` line is answered with
``{"clips": {"wall": [{stage: seconds}, ...], "cpu": [...]}}`` (``clips_per_sample`` clips per
clock, run alternately ``wall cpu wall cpu ...``) and ``quit`` ends it. Per clip: every float in
``result.timings``, ``video`` (writing the mp4) and ``clip`` (the call plus the video).

Two clocks. ``wall``: the runtime's own ``time.perf_counter`` figures. ``cpu``: the same figures
with ``time.perf_counter`` standing in for :func:`time.process_time` during the clip, so every
stage the runtime times reports the CPU seconds of this process (all its threads) instead; time
in which another process holds the core is not counted, so preemption by other jobs, the noise
of a loaded machine, drops out (cache and memory-bandwidth contention remain). Every revision's
runtime reads ``time.perf_counter`` at call time (``time.perf_counter()``); a runtime module that
imported the function itself (``from time import perf_counter``) would keep the wall clock, so
the worker refuses it rather than mislabel wall seconds as CPU seconds.
"""

import dataclasses
import inspect
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np
import PIL.Image

from runtime.options import GenerateOptions
from runtime.pipeline import VideoPipeline
from runtime.video import write_video

WALL = time.perf_counter  # the worker's own clock, kept when the runtime's is switched to CPU time
CLOCKS = {"wall": WALL, "cpu": time.process_time}


def _say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _call_kwargs(pipe, wanted):
    """``wanted`` (canonical names) mapped onto what this revision's ``pipe(...)`` accepts."""
    params = inspect.signature(type(pipe).__call__).parameters
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        try:  # newer revisions: pipe(image, **overrides) of runtime.options.GenerateOptions

            accepted |= {f.name for f in dataclasses.fields(GenerateOptions)}
        except ImportError:
            pass
    aliases = {"frames": ("frames", "num_frames")}
    kwargs, dropped = {}, []
    for key, value in wanted.items():
        name = next((a for a in aliases.get(key, (key,)) if a in accepted), None)
        if name is None:
            dropped.append(key)
        else:
            kwargs[name] = value
    return kwargs, dropped


def on_clock(clock, fn):
    """``fn()`` with ``time.perf_counter`` reading ``CLOCKS[clock]`` (the runtime's timings then
    are in that clock's seconds); the wall clock is put back afterwards."""
    time.perf_counter = CLOCKS[clock]
    try:
        return fn()
    finally:
        time.perf_counter = WALL


def _own_clocks():
    """Runtime and engine modules holding their own reference to ``time.perf_counter``."""
    return sorted(name for name, module in list(sys.modules.items())
                  if name.split(".")[0] in ("runtime", "engines")
                  and any(value is WALL for value in list(vars(module).values())))


def main():
    settings = json.loads(sys.stdin.readline())
    threads = int(settings.get("threads", 1))
    try:
        if "torch" in sys.modules:  # older revisions compute in torch: fix its threads as ONNX Runtime's
            sys.modules["torch"].set_num_threads(threads)

        load_params = inspect.signature(VideoPipeline.from_bundle).parameters
        load_kwargs = {"backend": settings.get("backend", "onnxruntime")}
        if "threads" in load_params:
            load_kwargs["threads"] = threads
        pipe = VideoPipeline.from_bundle(settings["bundle"], **load_kwargs)
        kwargs, dropped = _call_kwargs(pipe, settings["call"])
        h, w = settings["call"]["height"], settings["call"]["width"]
        y, x = np.mgrid[0:h, 0:w]  # a fixed gradient: the content does not change the timing
        image = PIL.Image.fromarray(np.stack([255 * x / max(1, w - 1), 255 * y / max(1, h - 1), 128 + 0 * x], -1).astype(np.uint8))
        out_dir = tempfile.mkdtemp(prefix="sfv-gate-worker-")
        video_path = os.path.join(out_dir, "clip.mp4")

        def clip(clock="wall"):
            now = CLOCKS[clock]

            def run():
                start = now()
                result = pipe(image, **kwargs)
                mid = now()
                write_video(result.frames, video_path, fps=7)
                return result, mid - start, now() - mid

            result, call, video = on_clock(clock, run)
            out = {k: float(v) for k, v in result.timings.items() if isinstance(v, float)}
            out.update(video=video, clip=call + video)
            out["unet_calls"] = int(result.timings.get("unet_calls", -1))
            return out

        stale = _own_clocks()
        if stale:
            raise RuntimeError(f"{', '.join(stale)} imported time.perf_counter by name, so the CPU clock cannot "
                               "reach their timings; run the gate against a revision that calls time.perf_counter()")
        first = clip()  # activates the engines (sessions load here)
        clip("cpu")
    except Exception as exc:  # noqa: BLE001 - reported to the gate, which names the side
        _say({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]})
        return 3
    _say({"ready": True, "python": sys.version.split()[0], "kwargs": sorted(kwargs), "dropped": dropped,
          "stages": sorted(first)})
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        try:
            clips = {"wall": [], "cpu": []}
            for _ in range(int(settings.get("clips_per_sample", 1))):
                for clock in clips:  # alternate, so that both clocks see the same moments of load
                    clips[clock].append(clip(clock))
            _say({"clips": clips})
        except Exception as exc:  # noqa: BLE001
            _say({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]})
            return 3
    try:
        os.remove(video_path)
        os.rmdir(out_dir)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
