"""Start-up of the C++ runtime: process start to the first clip written by ``sfv-generate`` (SF-V,
one step), and where it goes (``sfv_startup_probe``: manifest, sha256 of the graphs, each
network's session alone, the runtime's parallel session creation, image decoding).

    python -m benchmarks.cpp_startup --bundle B --image in.png [--repeats 7] [--baseline OLD/sfv-generate]

With --baseline, the two binaries run alternately in the same loop (same machine state; which one
runs first swaps every repeat) and the ratio of their medians is reported. Prints one JSON object: medians in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "runtime" / "cpp" / "build" / "release"
SFV_ONE_STEP = ["--steps", "1", "--max-guidance", "1", "--quiet"]


def first_clip_seconds(exe: Path, bundle: str, image: str, out: Path, threads: int) -> float:
    """Wall seconds from spawning sfv-generate to its exit with the clip written."""
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run([str(exe), "--bundle", bundle, "--image", image, "--out", str(out), "--threads", str(threads), *SFV_ONE_STEP],
                   check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if not out.is_file():
        raise SystemExit(f"{exe} wrote no {out}")
    return elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per session (default 2)")
    p.add_argument("--exe", default=str(BUILD / "sfv-generate"))
    p.add_argument("--baseline", help="another sfv-generate to alternate with (e.g. a build of the previous commit)")
    args = p.parse_args(argv)

    exes = {"current": Path(args.exe)} | ({"baseline": Path(args.baseline)} if args.baseline else {})
    walls: dict[str, list[float]] = {k: [] for k in exes}
    probes: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.npy"
        for r in range(args.repeats):
            order = list(exes) if r % 2 == 0 else list(exes)[::-1]  # neither binary always runs first
            for name in order:
                walls[name].append(first_clip_seconds(exes[name], args.bundle, args.image, out, args.threads))
            r = subprocess.run([str(BUILD / "sfv_startup_probe"), args.bundle, args.image, str(args.threads)],
                               check=True, capture_output=True, text=True)
            probes.append(json.loads(r.stdout))
    report = {
        "first_clip_s": {k: statistics.median(v) for k, v in walls.items()},
        "where_it_goes_s": {k: statistics.median(p[k] for p in probes) for k in probes[0]},
        "repeats": args.repeats,
        "load_average": os.getloadavg()[0],
    }
    if args.baseline:
        report["current_over_baseline"] = report["first_clip_s"]["current"] / report["first_clip_s"]["baseline"]
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
