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
``{"clips": [{stage: seconds}, ...]}`` (``clips_per_sample`` clips) and ``quit`` ends it.
Per clip: every float in ``result.timings``, ``video`` (writing the mp4) and ``clip`` (the call
plus the video, wall seconds).
"""

import inspect
import json
import os
import sys
import tempfile
import time
import traceback


def _say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _call_kwargs(pipe, wanted):
    """``wanted`` (canonical names) mapped onto what this revision's ``pipe(...)`` accepts."""
    params = inspect.signature(type(pipe).__call__).parameters
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        try:  # newer revisions: pipe(image, **overrides) of runtime.options.GenerateOptions
            import dataclasses

            from runtime.options import GenerateOptions

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


def main():
    settings = json.loads(sys.stdin.readline())
    threads = int(settings.get("threads", 1))
    try:
        import numpy as np
        import PIL.Image

        from runtime.pipeline import VideoPipeline
        from runtime.video import write_video

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

        def clip():
            start = time.perf_counter()
            result = pipe(image, **kwargs)
            mid = time.perf_counter()
            write_video(result.frames, video_path, fps=7)
            end = time.perf_counter()
            out = {k: float(v) for k, v in result.timings.items() if isinstance(v, float)}
            out.update(video=end - mid, clip=end - start)
            out["unet_calls"] = int(result.timings.get("unet_calls", -1))
            return out

        first = clip()  # activates the engines (sessions load here)
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
            _say({"clips": [clip() for _ in range(int(settings.get("clips_per_sample", 1)))]})
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
