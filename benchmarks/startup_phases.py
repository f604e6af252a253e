"""Where one Python start goes: the phases of ``python -m runtime.generate``, timed in a fresh process.

``python -m benchmarks.startup_phases BUNDLE IMAGE OUT [--no-ort-cache]`` makes one SF-V clip
(splitmix noise) as the command line does, and prints one JSON object of seconds per phase:
``imports`` (the command line's modules and onnxruntime), ``engines`` (the manifest read and
the graphs checked against their sha256), ``session <network>`` (each ONNX Runtime session,
graph optimisation or the cached optimised graph included), ``pipeline`` and ``write`` (the mp4). :mod:`benchmarks.startup` runs it beside the end-to-end timings. It imports
only what the runtime does, so that its own imports are not measured.
"""

from __future__ import annotations

import time

_START = time.perf_counter()

# After the clock: these imports are the "imports" phase.
import json  # noqa: E402
import sys  # noqa: E402

import onnxruntime  # noqa: E402,F401  (imported by the first session otherwise)

from runtime.generate import main as _  # noqa: E402,F401  (the command line's imports)
from runtime.options import GenerateOptions  # noqa: E402
from runtime.pipeline import VideoPipeline  # noqa: E402
from runtime.preprocess import load_image  # noqa: E402
from runtime.video import write_video  # noqa: E402

_IMPORTED = time.perf_counter()


def main(argv: list[str]) -> dict:
    bundle, image, out, *flags = argv
    phases = {"imports": _IMPORTED - _START}
    mark = _IMPORTED

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    pipe = VideoPipeline.from_bundle(bundle, ort_cache="--no-ort-cache" not in flags)
    lap("engines")
    for engine in pipe.engines.all():
        engine.activate()
        lap(f"session {engine.spec.name}")
    result = pipe(load_image(image), GenerateOptions(steps=1, max_guidance=1.0, generator="splitmix"), progress=False)
    lap("pipeline")
    write_video(result.frames, out, fps=result.options.fps)
    lap("write")
    pipe.close()
    return phases


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
