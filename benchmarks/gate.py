"""``python -m benchmarks.gate --base REF``: is the working tree slower than revision REF? (A/B in one run)

A shared CI machine cannot gate on absolute seconds recorded elsewhere, so the gate measures
both sides in the same run, on the same machine, at the same moment:

1. ``git worktree add`` a temporary checkout of REF (the *base*); the working tree is the *head*;
2. one bundle, exported once by the gate with the head's exporter (it says so), is run by both
   sides, so that a code comparison is not muddied by export differences (``--bundle`` reuses
   one; ``--base-bundle B1 --bundle B2`` compares two bundles under the same code instead);
3. each side runs in its own worker processes (this Python, the side's tree first on
   ``sys.path``; the worker, :mod:`benchmarks.ab_worker`, uses only the public pipeline API);
   the gate alternates them round by round (``A B B A ...``, rotating over the processes), so a
   burst of load hits both sides alike;
4. every stage is timed by two clocks, in alternate clips: wall seconds and the worker's CPU
   seconds (:mod:`benchmarks.ab_worker`); the gate decides on ``GateConfig.clock`` (CPU by
   default: on a loaded 2-core machine it caught injected slowdowns that wall time missed, see
   docs/benchmarks.md) and reports the other beside it;
5. per stage (preprocess, CLIP, VAE encoder, UNet, sampler, decoder, video writing, end to
   end) two rank tests on the rounds, paired (Wilcoxon signed-rank of each round's head/base log
   ratio, so load that drifts between rounds cancels) and unpaired (Mann-Whitney U), plus a
   minimum effect decide (:mod:`benchmarks.decide`).

It prints a table, writes ``gate.json`` and ``gate.md`` (for a CI comment) into ``--out``, and
exits 1 when a stage is slower, 0 otherwise (2 on a usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks.decide import Comparison, compare, smallest_p
from benchmarks.errors import BenchmarkError
from benchmarks.machine import describe, machine_info
from benchmarks.report import _md_table, _text_table, write_json_and_markdown
from contract.cli import run_cli
from contract.specs import NETWORKS, SAMPLER_STAGE
from contract.specs import STAGES as PIPELINE_STAGES

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ab_worker.py")
PROTOCOL_PREFIX = "{"  # worker answers are JSON objects; anything else a side prints is skipped
# Reported order: the pipeline's stages, then writing the video and the clip end to end; stages a
# revision's result.timings adds are appended, missing ones are skipped.
STAGES = (*PIPELINE_STAGES, "video", "end_to_end")
CLOCKS = ("cpu", "wall")  # what a stage's seconds are: the worker's process CPU time, or wall time
CLOCK_LABELS = {"cpu": "CPU", "wall": "wall"}


@dataclass(frozen=True)
class GateConfig:
    """What one gate run measures and how it decides."""

    mode: str = "quick"
    frames: int | None = 4  # None: the model's (from the bundle's manifest)
    height: int | None = None
    width: int | None = None
    steps: int = 2  # guided multi-step: every stage (CFG batch, sampler, decoder) runs
    min_guidance: float = 1.0
    max_guidance: float = 3.0
    rounds: int = 15  # timed rounds per side
    warmup: int = 2  # untimed rounds per worker process first
    clips_per_sample: int = 3  # one sample = the fastest of this many clips, per clock (2 x this many clips run)
    processes: int = 1  # worker processes per side (each imports torch: ~15-30 s on a loaded 2-core machine)
    threads: int = 1  # intra-op threads (1: two threads oversubscribe a shared 2-core machine)
    # Every worker is pinned to this CPU (None: the last usable one; -1: not pinned), so that a
    # difference between the VM's vCPUs cannot pass for a difference between the sides. It is
    # no cure for load: at load ~10 on 2 cores, pinned workers of identical code still had
    # medians up to 20% apart over 12 rounds (measured), which the paired test absorbs.
    cpu: int | None = None
    alpha: float = 0.001  # per-stage significance of the decision (8 stages: <= 0.8% false alarms)
    min_effect: float = 0.05  # smallest slowdown called a regression (5%)
    clock: str = "cpu"  # the clock the verdicts and the exit status follow; the other is reported beside it

    @classmethod
    def for_mode(cls, mode: str, **overrides) -> "GateConfig":
        if mode == "quick":
            base = cls()
        elif mode == "full":
            base = cls(mode="full", frames=None, steps=4, rounds=30, warmup=3, clips_per_sample=3, processes=3)
        else:
            raise BenchmarkError(f"unknown mode {mode!r}; use quick or full")
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def check(self) -> None:
        if self.clock not in CLOCKS:
            raise BenchmarkError(f"--clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        for name in ("rounds", "clips_per_sample", "processes", "threads", "steps"):
            if getattr(self, name) < 1:
                raise BenchmarkError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        fewest = next(n for n in range(2, 200) if smallest_p(n) < self.alpha)
        if self.rounds < fewest:
            raise BenchmarkError(f"--rounds {self.rounds} cannot reach p < {self.alpha} (the decision's smallest p-value "
                                 f"with {self.rounds} rounds is {smallest_p(self.rounds):.2g}); "
                                 f"use --rounds >= {fewest} or a larger --alpha")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a source tree and the bundle it runs."""

    name: str  # "base" or "head"
    root: Path  # source tree put first on sys.path
    bundle: Path
    label: str  # "HEAD~1 (1a2b3c4)", "working tree"
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of its workers
    pythonpath: tuple[str, ...] = ()  # extra sys.path entries after the root


# --------------------------------------------------------------------------- workers


class Worker:
    """One timing process of a side (see :mod:`benchmarks.ab_worker` for the protocol)."""

    def __init__(self, side: Side, config: GateConfig, call: Mapping, index: int):
        self.side, self.index = side, index
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"sfv-gate-{side.name}{index}-", suffix=".log", delete=False)
        env = {**os.environ, **side.env, "OMP_NUM_THREADS": str(config.threads), "PYTHONNOUSERSITE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(side.root), *side.pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER.read_text()], cwd=side.root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        settings = {"bundle": str(side.bundle), "threads": config.threads, "clips_per_sample": config.clips_per_sample,
                    "call": dict(call)}
        cpu = pinned_cpu(config)
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})  # before it imports anything: its threads inherit
        self._send(json.dumps(settings))
        self.info: dict | None = None

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the read that follows reports the worker's error

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                try:
                    answer = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "error" in answer:
                    raise WorkerError(self, answer["error"], answer.get("traceback", ""))
                return answer
        raise WorkerError(self, f"exited with status {self.proc.wait()}", self.stderr_tail())

    def ready(self) -> dict:
        self.info = self._read()
        return self.info

    def sample(self) -> dict[str, list[dict]]:
        """``{clock: [clip timings]}``: ``clips_per_sample`` clips per clock (see :data:`CLOCKS`)."""
        self._send("run")
        return self._read()["clips"]

    def stderr_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self._send("quit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        with contextlib.suppress(OSError):
            os.remove(self.log.name)


def pinned_cpu(config: GateConfig) -> int | None:
    """The CPU every worker runs on (see ``GateConfig.cpu``), or None where not pinned/supported."""
    if config.cpu == -1 or not hasattr(os, "sched_setaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    if config.cpu is None:
        return usable[-1]
    if config.cpu not in usable:
        raise BenchmarkError(f"--cpu {config.cpu} is not one of this process's CPUs {usable}; use one of them or -1")
    return config.cpu


class WorkerError(BenchmarkError):
    def __init__(self, worker: Worker, message: str, detail: str = ""):
        self.side = worker.side
        super().__init__(f"the {worker.side.name} side ({worker.side.label}, bundle {worker.side.bundle}) failed: "
                         f"{message}" + (f"\n{detail.strip()}" if detail.strip() else ""))


def start_workers(sides: Sequence[Side], config: GateConfig, call: Mapping) -> dict[str, list[Worker]]:
    """``config.processes`` ready workers per side (started together, they import in parallel)."""
    workers: dict[str, list[Worker]] = {}
    try:
        for side in sides:
            workers[side.name] = [Worker(side, config, call, i) for i in range(config.processes)]
        for group in workers.values():
            for w in group:
                w.ready()
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Mapping[str, Sequence[Worker]]) -> None:
    for group in workers.values():
        for w in group:
            w.close()


def round_order(names: Sequence[str], r: int) -> list[str]:
    """Side order of round ``r``: rotated by ``r`` and reversed every other cycle (``AB BA BA AB``...)."""
    k = len(names)
    order = list(names[r % k:]) + list(names[: r % k])
    return order[::-1] if (r // k) % 2 else order


def measure(workers: Mapping[str, Sequence[Worker]], rounds: int, warmup: int,
            progress=None) -> dict[str, list[dict[str, list[dict]]]]:
    """Interleaved rounds over the sides; ``{side: [round: {clock: [clip timings]}]}`` (warm-up rounds dropped).

    Round ``r`` runs one sample on each side (order from :func:`round_order`), on process
    ``r mod processes`` of that side, so every process of a side contributes alike.
    """
    names = list(workers)
    out: dict[str, list[dict[str, list[dict]]]] = {n: [] for n in names}
    processes = min(len(g) for g in workers.values())
    for r in range(warmup * processes + rounds):
        for name in round_order(names, r):
            clips = workers[name][r % processes].sample()
            if r >= warmup * processes:
                out[name].append(clips)
        if progress:
            progress(r + 1, warmup * processes + rounds)
    return out


# --------------------------------------------------------------------------- stages


def clip_stages(timings: Mapping[str, float]) -> dict[str, float]:
    """One clip's per-stage seconds from the worker's record (``result.timings`` + video + clip wall).

    ``sampler`` (the denoising loop outside its UNet calls) is the revision's own figure when it
    reports one, else ``total`` minus preprocess and the four network stages.
    """
    out = {k: float(v) for k, v in timings.items() if k not in ("total", "clip", "unet_calls", "steps")}
    if SAMPLER_STAGE not in out and "total" in timings and all(s in timings for s in ("preprocess", *NETWORKS)):
        out[SAMPLER_STAGE] = max(0.0, timings["total"] - sum(timings[s] for s in ("preprocess", *NETWORKS)))
    out["end_to_end"] = float(timings["clip"])
    return out


def sample_values(rounds: Sequence, clock: str = "wall") -> dict[str, list[float]]:
    """Per stage, one value per round: the fastest of that round's back-to-back clips on ``clock``.

    ``rounds[r]`` is a round's ``{clock: [clip timings]}`` (from :func:`measure`) or a plain list
    of one clock's clip timings.

    On a shared machine preemption only ever adds time (in scheduler ticks of ~4 ms, as large as
    the millisecond stages themselves), so the least disturbed clip is the best estimate of the
    stage's own cost, and a slowdown in the code shifts it as much as any other clip. On the
    sensitivity data (docs/benchmarks.md) the fastest clip detected more injected slowdowns than
    the median clip, with no more A/A alarms.
    """
    stages: dict[str, list[float]] = {}
    for clips in rounds:
        clips = clips[clock] if isinstance(clips, Mapping) else clips
        per_clip = [clip_stages(c) for c in clips]
        for stage in set().union(*per_clip):
            stages.setdefault(stage, []).append(min(c[stage] for c in per_clip if stage in c))
    return stages


def ordered_stages(*stage_sets) -> list[str]:
    present = set().union(*stage_sets)
    return [s for s in STAGES if s in present] + sorted(present - set(STAGES))


def decide(base: Mapping[str, Sequence[float]], head: Mapping[str, Sequence[float]], config: GateConfig
           ) -> tuple[list[Comparison], list[str]]:
    """Comparisons of the stages both sides report, and the stages only one side has."""
    comparisons, missing = [], []
    for stage in ordered_stages(base, head):
        if stage in base and stage in head:
            comparisons.append(compare(stage, base[stage], head[stage], config.alpha, config.min_effect))
        else:
            missing.append(f"{stage} (only on {'base' if stage in base else 'head'})")
    return comparisons, missing


def verdicts(values: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], config: GateConfig) -> dict:
    """The gate's decision from per-round samples ``values[clock][side][stage]`` (sides ``base`` and ``head``).

    Both clocks are compared; ``stages``, ``regressions`` (and so the exit status) follow
    ``config.clock``, ``stages_by_clock`` holds both.
    """
    by_clock = {clock: decide(v["base"], v["head"], config) for clock, v in values.items()}
    comparisons, missing = by_clock[config.clock]
    return {
        "clock": config.clock,
        "stages": [c.to_json() for c in comparisons],
        "stages_by_clock": {clock: [c.to_json() for c in comps] for clock, (comps, _) in by_clock.items()},
        "missing": missing,
        "regressions": [c.stage for c in comparisons if c.verdict == "slower"],
    }


# --------------------------------------------------------------------------- sides and bundles


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode:
        raise BenchmarkError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


@contextlib.contextmanager
def base_worktree(ref: str, repo: Path = ROOT):
    """A temporary detached ``git worktree`` of ``ref``; removed afterwards. Yields ``(path, label)``."""
    try:
        commit = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    except BenchmarkError:
        raise BenchmarkError(f"--base {ref!r} is not a revision of {repo}; give a commit, branch or tag "
                             "(e.g. --base HEAD~1, --base origin/main)") from None
    path = Path(tempfile.mkdtemp(prefix="sfv-gate-base-"))
    git(repo, "worktree", "add", "--detach", "--force", str(path), commit)
    try:
        yield path, f"{ref} ({commit[:9]})"
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


def export_bundle(root: Path, out: Path, model: str = "tiny", who: str = "the working tree") -> Path:
    """Export ``model`` with the exporter of the tree at ``root`` (its own process), without validation
    (the gate times graphs; `python -m export.onnx` validates them)."""
    log.info("exporting %s with %s's exporter to %s (explicitly, once; pass --bundle DIR to reuse a bundle)",
             model, who, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "export.onnx", "--model", model, "--out", str(out), "--no-validate",
                           "--quiet"], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise BenchmarkError(f"exporting {model} with {who}'s exporter failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    return out


def clip_call(bundle: Path, config: GateConfig) -> dict:
    """The generation options of every timed clip; dimensions default to the bundle's model config."""
    try:
        model = json.loads((bundle / "manifest.json").read_text())["model"]["config"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"{bundle} is not a bundle with a readable manifest.json ({exc}); export one with "
                             "`python -m export.onnx --model tiny --out DIR`") from None
    return {
        "frames": config.frames or model["num_frames"],
        "height": config.height or model["default_height"],
        "width": config.width or model["default_width"],
        "steps": config.steps, "min_guidance": config.min_guidance, "max_guidance": config.max_guidance,
        "seed": 0, "progress": False, "output": "frames",
    }


# --------------------------------------------------------------------------- one gate run


def run_ab(base: Side, head: Side, config: GateConfig, progress=None) -> dict:
    """Time ``base`` and ``head`` (interleaved) and decide per stage; the JSON-ready result."""
    config.check()
    start = time.perf_counter()
    machine = machine_info(config.threads)
    call = clip_call(head.bundle, config)
    workers = start_workers([base, head], config, call)
    try:
        started = time.perf_counter() - start
        samples = measure(workers, config.rounds, config.warmup, progress)
        infos = {name: group[0].info for name, group in workers.items()}
    finally:
        stop_workers(workers)
    values = {clock: {name: sample_values(rounds, clock) for name, rounds in samples.items()} for clock in CLOCKS}
    return {
        "benchmark": "gate",
        "machine": machine,
        "load_after": machine_info(config.threads)["load_average"],
        "config": asdict(config),
        "cpu": pinned_cpu(config),
        "call": call,
        "sides": {s.name: {"label": s.label, "root": str(s.root), "bundle": str(s.bundle), "worker": infos[s.name]}
                  for s in (base, head)},
        **verdicts(values, config),
        "samples": values,
        "seconds": {"start_workers": started, "measure": time.perf_counter() - start - started},
    }


# --------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    ms = 1000 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def table_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """One row per stage: the deciding clock's figures and verdict, then the other clock's ratio and verdict."""
    clock = result.get("clock", "wall")
    other = next((c for c in CLOCKS if c != clock), None)
    by_stage = {c["stage"]: c for c in result.get("stages_by_clock", {}).get(other, [])}
    name = CLOCK_LABELS[clock]
    header = ["stage", f"base {name} ms [IQR]", f"head {name} ms [IQR]", "head/base", "confidence", "verdict"]
    if by_stage:
        header += [f"{CLOCK_LABELS[other]} head/base", f"{CLOCK_LABELS[other]} verdict (not deciding)"]
    rows = []
    for c in result["stages"]:
        cell = lambda s: f"{_ms(s['median'])} [{_ms(s['q1'])}-{_ms(s['q3'])}]"
        verdict = {"slower": "SLOWER (regression)", "faster": "faster", "unsure": "unsure (noisy)", "same": "same"}[c["verdict"]]
        row = [c["stage"], cell(c["base"]), cell(c["head"]), f"{c['ratio']:.3f}", f"{100 * c['confidence']:.1f}%", verdict]
        if by_stage:
            o = by_stage.get(c["stage"])
            row += [f"{o['ratio']:.3f}", o["verdict"]] if o else ["-", "-"]
        rows.append(row)
    return header, rows


def header_lines(result: dict) -> list[str]:
    cfg, call, sides = result["config"], result["call"], result["sides"]
    same_bundle = sides["base"]["bundle"] == sides["head"]["bundle"]
    lines = [
        f"base: {sides['base']['label']}; head: {sides['head']['label']}",
        ("bundle (both sides): " + sides["head"]["bundle"]) if same_bundle else
        f"bundles: base {sides['base']['bundle']}, head {sides['head']['bundle']}",
        f"clip: {call['frames']} frames at {call['height']}x{call['width']}, {call['steps']} steps, guidance "
        f"{call['min_guidance']}->{call['max_guidance']}, mp4 written",
        f"{cfg['rounds']} interleaved rounds per side after {cfg['warmup']} warm-up per process, {cfg['processes']} "
        f"processes per side, a sample = fastest of {cfg['clips_per_sample']} clips per clock; {cfg['threads']} thread(s), "
        f"workers pinned to CPU {result.get('cpu', '-')}",
        f"decision on {CLOCK_LABELS[result.get('clock', 'wall')]} seconds (each stage is timed on both clocks, in "
        f"alternate clips): one-sided rank tests on the rounds (Wilcoxon signed-rank on head/base, Mann-Whitney U; the "
        f"smaller p doubled) < {cfg['alpha']} and a median round ratio of at least {1 + cfg['min_effect']:.2f}",
        f"machine: {describe(result['machine'])} (load after: {result['load_after'][0] if result['load_after'] else '?'})",
    ]
    if result.get("notes"):
        lines += [f"note: {n}" for n in result["notes"]]
    if result["missing"]:
        lines.append("not compared: " + ", ".join(result["missing"]))
    return lines


def verdict_line(result: dict) -> str:
    if result["regressions"]:
        return "REGRESSION: slower stages: " + ", ".join(result["regressions"])
    return "no regression"


def format_text(result: dict) -> str:
    return "\n".join(["latency gate (A/B in one run)", *header_lines(result), "", _text_table(*table_rows(result)), "",
                      verdict_line(result) + f" (gate wall time {result.get('wall_s', 0):.0f} s)"])


def format_markdown(result: dict) -> str:
    icon = ":x:" if result["regressions"] else ":white_check_mark:"
    return "\n".join([f"### Latency gate: {icon} {verdict_line(result)}", "", *[f"- {l}" for l in header_lines(result)],
                      "", _md_table(*table_rows(result)), ""])


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gate",
        description="A/B latency gate: time the working tree against a git revision (or one bundle against "
                    "another) in one run, interleaved, per stage; exit 1 on a regression.",
        epilog="examples:\n"
               "  python -m benchmarks.gate --base HEAD~1                 # quick (< 3 min on 2 cores)\n"
               "  python -m benchmarks.gate --base origin/main --mode full --out results/gate\n"
               "  python -m benchmarks.gate --base-bundle old/ --bundle new/   # two bundles, same code\n"
               "two exporters: export with each tree (`python -m export.onnx --model tiny --out DIR` in each\n"
               "checkout), then `python -m benchmarks.gate --base-bundle DIR_A --bundle DIR_B`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", metavar="REF", help="git revision to compare the working tree against (e.g. HEAD~1)")
    p.add_argument("--bundle", help="bundle the head runs (and the base too, unless --base-bundle); default: "
                                    "the gate exports --model once, explicitly, and says so")
    p.add_argument("--base-bundle", help="bundle the base runs (compare two bundles; without --base, same code)")
    p.add_argument("--model", default="tiny", help="model the gate exports when no --bundle is given (default tiny)")
    p.add_argument("--mode", choices=("quick", "full"), default="quick",
                   help="quick: 4 frames, 15 rounds (CI, < 3 min); full: the model's frames, 30 rounds")
    p.add_argument("--rounds", type=int, help="timed rounds per side")
    p.add_argument("--processes", type=int, help="worker processes per side")
    p.add_argument("--clips-per-sample", type=int, help="clips per sample and clock (the sample is the fastest; the clocks alternate)")
    p.add_argument("--threads", type=int, help="intra-op threads per worker (default 1)")
    p.add_argument("--frames", type=int, help="frames per clip (quick: 4; full: the model's)")
    p.add_argument("--steps", type=int, help="Euler steps with guidance (quick 2, full 4)")
    p.add_argument("--cpu", type=int, help="pin every worker to this CPU (default: the last usable one; -1: no pinning)")
    p.add_argument("--alpha", type=float, help="per-stage significance (default 0.001)")
    p.add_argument("--min-effect", type=float, help="smallest regression, as a fraction (default 0.05 = 5%%)")
    p.add_argument("--clock", choices=CLOCKS, help="the clock the verdicts follow: cpu (default; the workers' CPU "
                                                   "seconds, immune to preemption by other jobs) or wall; both are reported")
    p.add_argument("--out", default="results/gate", help="write gate.json and gate.md here (default %(default)s)")
    return p


def main_result(args) -> dict:
    """Resolve the sides from the options, run, and return the result (``wall_s`` included)."""
    start = time.perf_counter()
    if not args.base and not args.base_bundle:
        raise BenchmarkError("nothing to compare: pass --base REF (code) or --base-bundle DIR (bundles)")
    config = GateConfig.for_mode(args.mode, rounds=args.rounds, processes=args.processes, threads=args.threads,
                                 clips_per_sample=args.clips_per_sample, frames=args.frames, steps=args.steps,
                                 alpha=args.alpha, min_effect=args.min_effect, cpu=args.cpu, clock=args.clock)
    config.check()
    notes = []
    with contextlib.ExitStack() as stack:
        if args.base:
            base_root, base_label = stack.enter_context(base_worktree(args.base))
        else:
            base_root, base_label = ROOT, "working tree"
        if args.bundle:
            bundle = Path(args.bundle).resolve()
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfv-gate-bundle-")))
            bundle = export_bundle(ROOT, tmp / "bundle", args.model)
            notes.append(f"both sides run one bundle, exported by the gate with the working tree's exporter "
                         f"(--model {args.model}, not validated)")
        base_bundle = Path(args.base_bundle).resolve() if args.base_bundle else bundle
        head = Side("head", ROOT, bundle, "working tree")
        base = Side("base", base_root, base_bundle, base_label)
        try:
            result = run_ab(base, head, config, _progress)
        except BenchmarkError as exc:
            # The base revision may not read a bundle written by a newer exporter (a format change):
            # then it runs a bundle of its own exporter, and the table says so.
            if not (getattr(exc, "side", None) is base and args.base and not args.base_bundle):
                raise
            log.info("gate: the base cannot run the head's bundle (%s); exporting with the base's exporter",
                     str(exc).splitlines()[0])
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfv-gate-base-bundle-")))
            base = replace(base, bundle=export_bundle(base_root, tmp / "bundle", args.model, f"the base ({base_label})"))
            notes.append("the base could not read the head's bundle, so each side runs its own exporter's "
                         "bundle: export differences are part of the comparison")
            result = run_ab(base, head, config, _progress)
    result["notes"] = notes
    result["wall_s"] = time.perf_counter() - start
    return result


def _progress(done: int, total: int) -> None:
    if done == total or done % 5 == 0:
        log.info("gate: round %d/%d", done, total)


def main(argv: Sequence[str] | None = None) -> int:
    @run_cli
    def _main(argv):
        args = _parser().parse_args(argv)
        result = main_result(args)
        print(format_text(result))
        paths = write_json_and_markdown(args.out, "gate", result, format_markdown(result))
        print(f"\nwrote {paths[0]}, {paths[1]}")
        return 1 if result["regressions"] else 0

    return _main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
