"""OpenVINO f32 against ONNX Runtime on one bundle: the UNet per frame count and a whole SF-V clip.

Run it on an AVX2-only CPU, or emulate one on an AVX-512 host (AVX-512 hidden from CPUID, so
that OpenVINO/oneDNN take their AVX2 kernels; 10-100x slower)::

    qemu-x86_64 -cpu Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm .venv/bin/python \\
        tests/openvino_avx2_check.py --bundle bundles/tiny --frames 7 8 14 --clip-frames 0 --no-workaround

``--no-workaround`` compiles without :data:`engines.openvino_engine.AVX2_WORKAROUNDS`, to show
the fault they avoid. Prints one JSON object: what the process saw of the CPU, the compile
properties used, the UNet's relative error ``||y_ov - y_ort|| / ||y_ort||`` per frame count
(also from a compiled-model cache, ``unet_cached``), and the clip's largest uint8 level difference.
``tests/test_openvino.py::test_avx2_f32_matches_onnxruntime`` runs it with ``-m avx2emu``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(y - reference) / np.linalg.norm(reference))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[14], help="UNet calls (batch 1) at these frame counts")
    p.add_argument("--clip-frames", type=int, default=14, help="SF-V one-step clip with this many frames (0: none)")
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--no-workaround", action="store_true", help="compile without AVX2_WORKAROUNDS (shows the fault)")
    args = p.parse_args(argv)

    import openvino

    import engines.openvino_engine as ove
    from benchmarks.workload import build_calls, synthetic_image
    from engines.factory import create_engines, pipeline_engines
    from contract.bundle import Bundle
    from runtime.pipeline import VideoPipeline

    if args.no_workaround:
        ove.AVX2_WORKAROUNDS = {}
    start = time.perf_counter()
    config = Bundle.load(args.bundle).config
    ort_unet = create_engines(args.bundle, "onnxruntime", networks=["unet"], threads=1)["unet"]
    out = {"openvino": openvino.__version__, "avx512": ove.cpu_has_avx512(), "workarounds": ove.cpu_workarounds(),
           "unet": {}, "unet_cached": {}}
    with tempfile.TemporaryDirectory() as cache:
        ov_unet = create_engines(args.bundle, "openvino", networks=["unet"], threads=1, ov_cache_dir=cache)["unet"]
        for frames in args.frames:
            _, inputs = build_calls(config, frames, args.height, args.width, calls=["unet_b1"])["unet_b1"]
            want = ort_unet.run(inputs)["noise_pred"]
            out["unet"][frames] = relative_error(ov_unet.run(inputs)["noise_pred"], want)
        # A second engine imports the compiled model from the cache: the workaround must hold there too.
        cached = create_engines(args.bundle, "openvino", networks=["unet"], threads=1, ov_cache_dir=cache)["unet"]
        _, inputs = build_calls(config, args.frames[-1], args.height, args.width, calls=["unet_b1"])["unet_b1"]
        got = cached.run(inputs)["noise_pred"]
        out["unet_cached"][args.frames[-1]] = relative_error(got, ort_unet.run(inputs)["noise_pred"])
        out["loaded_from_cache"] = bool(cached.compiled.get_property("LOADED_FROM_CACHE"))
        del ov_unet, cached
        if args.clip_frames:
            # The same cache: the pipeline's UNet is imported, not compiled again (minutes when emulated).
            image = synthetic_image(args.height, args.width)
            clips = {}
            for backend, options in (("onnxruntime", {}), ("openvino", {"ov_cache_dir": cache})):
                pipe = VideoPipeline(pipeline_engines(args.bundle, backend, threads=1, **options))
                # splitmix noise (numpy), the same for both: torch's generator would import torch (minutes emulated).
                clips[backend] = pipe(image, num_frames=args.clip_frames, height=args.height, width=args.width, seed=0,
                                      generator="splitmix", steps=1, min_guidance=1.0, max_guidance=1.0,
                                      progress=False).frames
                del pipe
            diff = np.abs(clips["openvino"].astype(int) - clips["onnxruntime"])
            out["clip"] = {"frames": args.clip_frames, "shape": list(diff.shape),
                           "max_level_difference": int(diff.max())}
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
