"""Time the C++ and Python runtimes on one bundle, alternating, in one run (medians of repeats).

    python runtime/cpp/scripts/compare_timings.py --bundle B --image in.png [--repeats 3] [-- extra generate flags]

Per repeat, alternating C++ and Python: the wall time from process start to the clip written
(``sfv-generate`` vs ``python -m runtime.generate``, fresh processes, the same explicit noise), and
the per-stage seconds each runtime reports (C++ ``--timings-json``; Python ``VideoResult.timings``
from the API in its own process), for a process's first clip and for its second (warm sessions).
Prints one JSON object with the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CPP = ROOT / "runtime" / "cpp" / "build" / "release" / "sfv-generate"
STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "sampler", "vae_decoder", "total")
PY_API = """
import json, sys, time
t0 = time.perf_counter()
from runtime.noise import ExplicitNoise
from runtime.options import GenerateOptions
from runtime.pipeline import VideoPipeline
opts = GenerateOptions(**json.loads(sys.argv[3]))
with VideoPipeline.from_bundle(sys.argv[1], threads=int(sys.argv[6]) or None) as pipe:
    for _ in range(int(sys.argv[5])):
        r = pipe(sys.argv[2], opts, noise=ExplicitNoise.load(sys.argv[4]), progress=False)
print(json.dumps({k: float(v) for k, v in r.timings.items()}))
"""


def wall(cmd) -> float:
    start = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--max-guidance", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads in both (default: its choice)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sfv-timings-"))
    gen = ["--steps", str(args.steps), "--max-guidance", str(args.max_guidance)] + (["--threads", str(args.threads)] if args.threads else [])
    # One noise file for both runtimes (drawn by Python's portable generator).
    subprocess.run([sys.executable, "-m", "runtime.generate", "--bundle", args.bundle, "--image", args.image, "--out", tmp / "n.npy",
                    "--generator", "splitmix", "--save-noise", tmp / "noise.npz", "--quiet", *gen], check=True, cwd=ROOT,
                   capture_output=True)
    runs = {"cpp_first_clip_s": [], "python_first_clip_s": [], "cpp": [], "python": [], "cpp_warm": [], "python_warm": []}
    for _ in range(args.repeats):  # alternate A/B so load drifts hit both
        runs["cpp_first_clip_s"].append(wall([CPP, "--bundle", args.bundle, "--image", args.image, "--out", tmp / "c.npy",
                                              "--noise", tmp / "noise.npz", "--quiet", "--timings-json", tmp / "t.json", *gen]))
        runs["cpp"].append(json.loads((tmp / "t.json").read_text()))
        runs["python_first_clip_s"].append(wall([sys.executable, "-m", "runtime.generate", "--bundle", args.bundle, "--image", args.image,
                                                 "--out", tmp / "p.npy", "--noise", tmp / "noise.npz", "--quiet", *gen]))
        opts = json.dumps({"steps": args.steps, "max_guidance": args.max_guidance})
        for key, n in (("python", 1), ("python_warm", 2)):
            out = subprocess.run([sys.executable, "-c", PY_API, args.bundle, args.image, opts, tmp / "noise.npz", str(n), str(args.threads)],
                                 check=True, capture_output=True, text=True, cwd=ROOT).stdout
            runs[key].append(json.loads(out.strip().splitlines()[-1]))
        wall([CPP, "--bundle", args.bundle, "--image", args.image, "--out", tmp / "c.npy", "--noise", tmp / "noise.npz", "--quiet",
              "--timings-json", tmp / "t.json", "--repeat", "2", *gen])
        runs["cpp_warm"].append(json.loads((tmp / "t.json").read_text()))
    result = {
        "repeats": args.repeats,
        "generate": gen,
        "cpp_first_clip_s": statistics.median(runs["cpp_first_clip_s"]),
        "python_first_clip_s": statistics.median(runs["python_first_clip_s"]),
        "stages_median_s": {  # first clip of a process, and the second (warm sessions)
            s: {k: statistics.median(r[s] for r in runs[k]) for k in ("cpp", "python", "cpp_warm", "python_warm")} for s in STAGES
        },
    }
    try:
        from benchmarks.machine import describe, machine_info

        result["machine"] = describe(machine_info())
    except ImportError:  # a runtime-only install has no benchmarks extras
        pass
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
