"""Start-up: process start to the first written clip, with and without the start-up caches.

Each configuration is one fresh process of a runtime's command line making one SF-V clip (one
step, no guidance) from a bundle. Timed: spawn to the clip written (the output's mtime; the
process's teardown after that is not start-up), spawn to exit, and the pipeline's own time (the
runtime's printed ``total``), so that ``start-up overhead = clip written - pipeline``.
Configurations alternate round by round (medians):

- ``python no cache``: ``python -m runtime.generate --no-ort-cache`` (every graph hashed and
  optimised at start, as before the caches);
- ``python cold`` / ``python warm``: with the caches (engines/ort_cache.py: ONNX Runtime's
  optimised graphs and the graphs' stat-remembered sha256), emptied before the cold run;
- ``cpp cold`` / ``cpp warm``: the C++ ``sfv-generate`` (when built), same cache;
- ``python import``: ``python -c "import runtime.generate"`` (interpreter and imports alone);
- ``python warm, torch noise``: ``--generator auto`` where torch is installed (diffusers' noise
  needs torch, whose import is start-up too);
- ``phases, no cache`` / ``phases, warm``: :mod:`benchmarks.startup_phases`, seconds per phase of
  one Python start (imports, checks, each session, pipeline, writing).

All runs use the portable splitmix noise (the one both runtimes have) unless named otherwise.
The bundle is staged in a temporary directory (its manifest copied, its files linked), so the
cache lands there and the bundle itself is left as it was.

``python -m benchmarks.startup --bundle runs/bundle`` or ``--model tiny`` (exports one first).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from benchmarks.errors import BenchmarkError
from benchmarks.machine import contention_warning, describe, machine_info
from benchmarks.report import write_json_and_markdown
from benchmarks.timing import interleave, summarize
from contract.bundle import MANIFEST
from contract.cli import run_cli
from contract.environment import cpu_flags
from engines.ort_cache import CACHE_DIR_NAME

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CPP_EXE = ROOT / "runtime" / "cpp" / "build" / "release" / "sfv-generate"
GOALS = {"python_clip_s": 1.0, "cpp_overhead_s": 0.3}  # the start-up goals (docs/benchmarks.md)
SF_V = ["--steps", "1", "--max-guidance", "1"]
_PY_TOTAL = re.compile(r"\| total ([0-9.]+)s")


def stage_bundle(bundle: Path, stage: Path) -> Path:
    """``stage/bundle``: ``bundle``'s manifest copied and its other files linked, without its caches."""
    out = stage / "bundle"
    out.mkdir(parents=True)
    for p in bundle.iterdir():
        if p.name == CACHE_DIR_NAME:
            continue
        if p.name == MANIFEST:
            shutil.copy2(p, out / p.name)
        else:
            (out / p.name).symlink_to(p.resolve())
    return out


def _run(cmd: Sequence, pipeline_seconds, clip: Path | None = None) -> dict:
    """One process: ``wall`` (spawn to exit), ``clip`` (spawn to the clip's last write, its mtime:
    the process's own teardown after it is not start-up), the pipeline's own time from its output,
    and ``overhead = clip - pipeline``."""
    if clip is not None and clip.exists():
        clip.unlink()
    spawned = time.time()  # the clock of file mtimes
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchmarkError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    written = clip.stat().st_mtime - spawned if clip is not None else None
    pipeline = pipeline_seconds(proc)
    return {"wall": wall, "clip": written, "pipeline": pipeline,
            "overhead": written - pipeline if pipeline is not None and written is not None else None}


def _python_total(proc) -> float:
    match = _PY_TOTAL.search(proc.stdout)
    if not match:
        raise BenchmarkError(f"no timings line in runtime.generate's output: {proc.stdout[-500:]}")
    return float(match.group(1))  # printed to 10 ms


def samplers(bundle: Path, image: Path, out: Path, threads: int | None, cpp: Path | None) -> dict:
    """The configurations, each a callable returning ``{"wall", "pipeline", "overhead"}``."""
    cache = bundle / CACHE_DIR_NAME
    thread_args = ["--threads", str(threads)] if threads else []
    py = [sys.executable, "-m", "runtime.generate", "--bundle", bundle, "--image", image, *SF_V, *thread_args, "--quiet"]

    def python(name, *extra, cold=False):
        def run():
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            return _run([*py, "--out", out / f"{name}.mp4", *extra], _python_total, out / f"{name}.mp4")
        return run

    configs = {
        "python no cache": python("nocache", "--generator", "splitmix", "--no-ort-cache"),
        "python cold": python("cold", "--generator", "splitmix", cold=True),
        "python warm": python("warm", "--generator", "splitmix"),
    }
    if cpp is not None:
        timings = out / "cpp-timings.json"

        def cpp_run(cold):
            def run():
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                cmd = [cpp, "--bundle", bundle, "--image", image, "--out", out / "cpp.npy", *SF_V, *thread_args,
                       "--timings-json", timings, "--quiet"]
                return _run(cmd, lambda _: json.loads(timings.read_text())["total"], out / "cpp.npy")
            return run

        configs["cpp cold"] = cpp_run(True)
        configs["cpp warm"] = cpp_run(False)
    configs["python import"] = lambda: _run([sys.executable, "-c", "import runtime.generate"], lambda _: None)
    if importlib.util.find_spec("torch") is not None:
        configs["python warm, torch noise"] = python("torchnoise", "--generator", "auto")
    for name, extra in (("phases, no cache", ["--no-ort-cache"]), ("phases, warm", [])):
        configs[name] = _phases(bundle, image, out / "phases.mp4", extra)
    return configs


def _phases(bundle: Path, image: Path, out: Path, extra: list):
    """A sampler of :mod:`benchmarks.startup_phases`: seconds per phase of one fresh Python start."""
    def run():
        proc = subprocess.run([sys.executable, "-m", "benchmarks.startup_phases", bundle, image, out, *extra],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise BenchmarkError(f"benchmarks.startup_phases failed: {proc.stderr.strip()[-2000:]}")
        return {"phases": json.loads(proc.stdout.strip().splitlines()[-1])}
    return run


def run(bundle: Path, image: Path | None, repeats: int, threads: int | None, cpp: Path | None) -> dict:
    info = machine_info(threads)
    with tempfile.TemporaryDirectory(prefix="sfv-startup-") as tmp:
        tmp = Path(tmp)
        staged = stage_bundle(bundle, tmp)
        if image is None:
            image = tmp / "in.png"
            PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
        configs = samplers(staged, image, tmp, threads, cpp)
        samples = interleave(configs, repeats, warmup=1)  # the warm-up round fills the OS page cache
    result = {"machine": info, "cpu_flags": sorted(cpu_flags()), "bundle": str(bundle), "repeats": repeats,
              "threads": threads, "goals": GOALS, "configs": {}}
    result["phases"] = {}
    for name, runs in samples.items():
        if "phases" in runs[0]:
            result["phases"][name] = {k: summarize([r["phases"][k] for r in runs]).to_json() for k in runs[0]["phases"]}
            continue
        row = {k: summarize([r[k] for r in runs]).to_json() for k in ("wall", "clip", "pipeline", "overhead")
               if runs[0][k] is not None}
        result["configs"][name] = row
    result["ratios"] = _ratios(result["configs"])
    return result


def _median(configs: dict, name: str, key: str = "wall") -> float | None:
    return configs.get(name, {}).get(key, {}).get("median")


def _ratios(configs: dict) -> dict:
    out = {}
    nocache, warm, cold = (_median(configs, n, "clip") for n in ("python no cache", "python warm", "python cold"))
    out["python_nocache_over_warm"] = nocache / warm
    out["python_cold_over_warm"] = cold / warm
    if "cpp warm" in configs:
        out["cpp_cold_over_warm"] = _median(configs, "cpp cold", "clip") / _median(configs, "cpp warm", "clip")
        out["python_warm_over_cpp_warm"] = warm / _median(configs, "cpp warm", "clip")
    out["python_warm_meets_goal"] = warm <= GOALS["python_clip_s"]
    if "cpp warm" in configs:
        out["cpp_warm_overhead_meets_goal"] = _median(configs, "cpp warm", "overhead") <= GOALS["cpp_overhead_s"]
    return out


def format_markdown(result: dict) -> str:
    lines = [f"Start-up, {result['bundle']}: process start to the first written clip (SF-V, 1 step), "
             f"medians of {result['repeats']} alternated rounds; {describe(result['machine'])}.", "",
             "| configuration | to clip written s (q1-q3) | to exit s | pipeline s | overhead s (clip - pipeline) |",
             "|---|---|---|---|---|"]
    for name, row in result["configs"].items():
        c = row.get("clip")
        clip = f"{c['median']:.3f} ({c['q1']:.3f}-{c['q3']:.3f})" if c else "-"
        p = f"{row['pipeline']['median']:.3f}" if "pipeline" in row else "-"
        o = f"{row['overhead']['median']:.3f}" if "overhead" in row else "-"
        lines.append(f"| {name} | {clip} | {row['wall']['median']:.3f} | {p} | {o} |")
    if result["phases"]:
        names = list(result["phases"])
        lines += ["", "Phases of one Python start (benchmarks/startup_phases.py, medians, s):", "",
                  "| phase | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for phase in result["phases"][names[0]]:
            lines.append(f"| {phase} | " + " | ".join(f"{result['phases'][n][phase]['median']:.3f}" for n in names) + " |")
    r, g = result["ratios"], result["goals"]
    lines += ["", f"python: no cache / warm = {r['python_nocache_over_warm']:.2f}x, cold / warm = {r['python_cold_over_warm']:.2f}x; "
              f"goal <= {g['python_clip_s']} s to the clip: {'met' if r['python_warm_meets_goal'] else 'NOT met'} (warm)."]
    if "cpp_cold_over_warm" in r:
        lines.append(f"cpp: cold / warm = {r['cpp_cold_over_warm']:.2f}x; python warm / cpp warm = "
                     f"{r['python_warm_over_cpp_warm']:.2f}x; goal overhead <= {g['cpp_overhead_s']} s: "
                     f"{'met' if r['cpp_warm_overhead_meets_goal'] else 'NOT met'} (warm).")
    lines.append("python's pipeline time is printed to 10 ms; the C++ one to 1 us.")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.startup",
        description="Process start to first written clip, Python and C++ runtimes, with and without the start-up caches.",
        epilog="examples:\n"
               "  python -m benchmarks.startup --bundle runs/bundle\n"
               "  python -m benchmarks.startup --model tiny --repeats 7 --out results/startup\n"
               "The C++ runtime is timed when built (runtime/cpp/scripts/build.sh) or given with --cpp.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="an exported bundle directory (left unchanged: the runs use a staged copy)")
    src.add_argument("--model", help="export this model first (e.g. tiny) into a temporary bundle")
    p.add_argument("--image", help="conditioning image (default: a 70x50 random image)")
    p.add_argument("--repeats", type=int, default=5, help="alternated rounds after one warm-up round (default 5)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for both runtimes (default: theirs)")
    p.add_argument("--cpp", metavar="EXE", help=f"the C++ sfv-generate (default: {CPP_EXE.relative_to(ROOT)} when built)")
    p.add_argument("--no-cpp", action="store_true", help="time the Python runtime only")
    p.add_argument("--out", metavar="DIR", help="write startup.json and startup.md here")
    return p


@run_cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.repeats < 1:
        raise BenchmarkError("--repeats must be >= 1")
    cpp = None if args.no_cpp else Path(args.cpp) if args.cpp else CPP_EXE if CPP_EXE.is_file() else None
    if cpp is not None and not cpp.is_file():
        raise BenchmarkError(f"--cpp {cpp} does not exist; build it with runtime/cpp/scripts/build.sh")
    warning = contention_warning(machine_info(args.threads))
    if warning:
        log.warning(warning)
    with tempfile.TemporaryDirectory(prefix="sfv-startup-bundle-") as tmp:
        if args.model:
            subprocess.run([sys.executable, "-m", "export.onnx", "--model", args.model, "--out", Path(tmp) / "bundle"],
                           check=True, cwd=ROOT)
            bundle = Path(tmp) / "bundle"
        else:
            bundle = Path(args.bundle)
            if not (bundle / MANIFEST).is_file():
                raise BenchmarkError(f"--bundle {bundle} has no {MANIFEST}; export one with `python -m export.onnx --model tiny --out {bundle}`")
        result = run(bundle, Path(args.image) if args.image else None, args.repeats, args.threads, cpp)
    text = format_markdown(result)
    print(text)
    if args.out:
        write_json_and_markdown(args.out, "startup", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
