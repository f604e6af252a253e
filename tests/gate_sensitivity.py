"""Measure the latency gate's detection and false-alarm rates on this machine (test-only harness).

    python tests/gate_sensitivity.py --bundle DIR --blocks 3 --out results/sensitivity.json
    python tests/gate_sensitivity.py --analyse results/sensitivity.json

For each stage the gate reports (``tests/slowdown.py``), one session runs five worker processes
of the working tree: the base, an unchanged copy (A/A) and three copies with that stage slowed
by 10%, 15% and 30%, all interleaved round by round exactly as ``python -m benchmarks.gate``
alternates its two sides. The rounds are cut into blocks of ``--rounds`` (the gate's quick
setting); each block is one trial: the gate's decision (:func:`benchmarks.gate.decide`) on
that block's base samples against each other side's. A trial detects a slowdown when the slowed
stage is flagged ``slower``; an A/A trial is a false alarm when any stage is flagged. Raw clip
timings are saved on both clocks (wall and CPU seconds, see ``benchmarks/ab_worker.py``), so
``--analyse`` recomputes the table for either clock and other decision settings:

    python tests/gate_sensitivity.py --analyse results/sensitivity.json --clock wall --markdown

``--load N`` runs N busy Python loops pinned to the workers' CPU for the whole collection (a
reproducible "loaded machine": the workers then get about 1/(N+1) of their core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gate import (  # noqa: E402
    CLOCKS, GateConfig, Side, clip_call, decide, measure, ordered_stages, pinned_cpu, sample_values, start_workers,
    stop_workers,
)
from benchmarks.machine import machine_info  # noqa: E402
from contract.specs import STAGES as PIPELINE_STAGES  # noqa: E402

SIZES = (0.10, 0.15, 0.30)
STAGES = (*PIPELINE_STAGES, "video")  # the stages tests/slowdown.py can slow


def sides_for(stage: str, bundle: Path) -> list[Side]:
    inject = (str(TESTS / "gate_inject"),)
    out = [Side("base", ROOT, bundle, "working tree"), Side("aa", ROOT, bundle, "working tree (unchanged)")]
    out += [Side(f"slow{int(100 * f)}", ROOT, bundle, f"{stage} +{int(100 * f)}%",
                 env={"SFV_TEST_SLOWDOWN": f"{stage}:{f}"}, pythonpath=inject) for f in SIZES]
    return out


def busy_loops(n: int, cpu: int | None) -> list:
    """``n`` processes spinning a Python loop, pinned to ``cpu`` (the load of a shared CI machine)."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    for proc in procs:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
    return procs


def collect(args) -> None:
    config = GateConfig.for_mode("quick", processes=1)
    load = busy_loops(args.load, pinned_cpu(config))
    try:
        _collect(args, config)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()


def _collect(args, config) -> None:
    bundle = Path(args.bundle).resolve()
    call = clip_call(bundle, config)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"config": config.__dict__, "call": call, "sessions": []}
    done = {s["stage"] for s in data["sessions"]}
    for stage in [s for s in (args.stages or STAGES) if s not in done]:
        start = time.perf_counter()
        before = machine_info(1)
        workers = start_workers(sides_for(stage, bundle), config, call)
        try:
            raw = measure(workers, config.rounds * args.blocks, config.warmup)
        finally:
            stop_workers(workers)
        data["sessions"].append({"stage": stage, "raw": raw, "blocks": args.blocks, "rounds": config.rounds,
                                 "busy_loops": args.load,
                                 "load_before": before["load_average"], "load_after": machine_info(1)["load_average"],
                                 "machine": before, "seconds": time.perf_counter() - start})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data))
        print(f"{stage}: {time.perf_counter() - start:.0f} s, load {before['load_average']}", flush=True)


def analyse(path: Path, clock: str = "cpu", **overrides) -> dict:
    data = json.loads(path.read_text())
    config = replace(GateConfig(**data["config"]), clock=clock, **{k: v for k, v in overrides.items() if v is not None})
    hits = {f: [] for f in SIZES}
    per_stage = {}
    others = {f: 0 for f in SIZES}
    aa_alarms, aa_trials, aa_stage_alarms = 0, 0, {}
    aa_ratios: dict[str, list[float]] = {}  # per stage, every round's unchanged/base ratio: the noise floor
    loads = []
    for session in data["sessions"]:
        stage, rounds = session["stage"], session["rounds"]
        loads += [session["load_before"][0], session["load_after"][0]]
        for b in range(session["blocks"]):
            block = {name: sample_values(r[b * rounds:(b + 1) * rounds], clock) for name, r in session["raw"].items()}
            comps, _ = decide(block["base"], block["aa"], config)
            for s, values in block["aa"].items():
                aa_ratios.setdefault(s, []).extend(a / b for a, b in zip(values, block["base"].get(s, [])) if b > 0)
            flagged = [c.stage for c in comps if c.verdict == "slower"]
            aa_trials += 1
            aa_alarms += bool(flagged)
            for s in flagged:
                aa_stage_alarms[s] = aa_stage_alarms.get(s, 0) + 1
            for f in SIZES:
                comps, _ = decide(block["base"], block[f"slow{int(100 * f)}"], config)
                verdicts = {c.stage: c.verdict for c in comps}
                hits[f].append((stage, verdicts.get(stage) == "slower"))
                cell = per_stage.setdefault(stage, {}).setdefault(str(f), [0, 0])
                cell[0] += verdicts.get(stage) == "slower"
                cell[1] += 1
                others[f] += any(v == "slower" for s, v in verdicts.items() if s not in (stage, "end_to_end"))
    table = {
        "clock": clock,
        "config": config.__dict__,
        "aa": {"trials": aa_trials, "false_alarms": aa_alarms, "by_stage": aa_stage_alarms},
        "ab": {str(f): {"trials": len(hits[f]), "detected": sum(h for _, h in hits[f]),
                        "missed": sorted({s for s, h in hits[f] if not h}), "other_stage_flagged": others[f]}
               for f in SIZES},
        "per_stage": per_stage,
        "aa_ratio_quartiles": {s: [round(q, 4) for q in summarize(aa_ratios[s])[0::2]]
                               for s in ordered_stages(aa_ratios) if aa_ratios[s]},
        "load": [min(loads), max(loads)] if loads else None,
        "session_seconds": [round(s["seconds"]) for s in data["sessions"]],
    }
    return table


def markdown(table: dict) -> str:
    """The docs table: rates per size, then detections per stage."""
    aa = table["aa"]
    lines = ["| trials | slowdown | flagged | rate |", "|---|---|---|---|",
             f"| A/A, {aa['trials']} | none | {aa['false_alarms']} false alarm(s) | {100 * aa['false_alarms'] / max(1, aa['trials']):.0f}% |"]
    for f, row in table["ab"].items():
        lines.append(f"| A/B, {row['trials']} | +{100 * float(f):.0f}% of one stage | {row['detected']} detected "
                     f"({row['other_stage_flagged']} with another stage also flagged) | {100 * row['detected'] / max(1, row['trials']):.0f}% |")
    lines += ["", "| stage | " + " | ".join(f"+{100 * float(f):.0f}%" for f in table["ab"]) + " |",
              "|---|" + "---|" * len(table["ab"])]
    for stage, cells in table["per_stage"].items():
        lines.append(f"| {stage} | " + " | ".join(f"{cells[f][0]}/{cells[f][1]}" for f in table["ab"]) + " |")
    lines += ["", "| stage | unchanged/base per round: q1 - q3 |", "|---|---|"]
    lines += [f"| {stage} | {q[0]:.3f} - {q[1]:.3f} |" for stage, q in table["aa_ratio_quartiles"].items()]
    return "\n".join(lines)


def summarize(values):
    """``(q1, median, q3)`` of ``values``."""
    from statistics import quantiles

    return tuple(quantiles(values, n=4, method="inclusive")) if len(values) > 1 else (values[0],) * 3


def record_fixture(path: Path, out: Path, sides=("base", "aa", "slow15", "slow30"), block: int = 0) -> None:
    """Write the per-round samples of one block of each session (both clocks) to a small JSON file:
    the recorded data that ``tests/test_benchmarks_decision.py`` runs the gate's decision on."""
    data = json.loads(path.read_text())
    sessions = []
    for session in data["sessions"]:
        rounds, raw = session["rounds"], session["raw"]
        part = lambda name, clock: sample_values(raw[name][block * rounds:(block + 1) * rounds], clock)
        sessions.append({
            "slowed_stage": session["stage"], "busy_loops": session.get("busy_loops", 0),
            "load_before": session["load_before"], "load_after": session["load_after"],
            "values": {clock: {name: {stage: [round(v, 7) for v in vals] for stage, vals in part(name, clock).items()}
                               for name in sides} for clock in CLOCKS},
        })
    m = data["sessions"][0]["machine"]
    fixture = {
        "what": f"per-round samples (seconds; a sample = the fastest of {data['config']['clips_per_sample']} clips) of "
                f"block {block} of each session of tests/gate_sensitivity.py: base, an unchanged copy (aa) and the "
                "session's stage slowed by 15% and 30% (slow15, slow30)",
        "machine": {k: m.get(k) for k in ("date", "cpu", "vector_extensions", "cores", "versions")},
        "call": data["call"],
        "sessions": sessions,
    }
    out.write_text(json.dumps(fixture, indent=0) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle")
    p.add_argument("--blocks", type=int, default=3, help="trials per stage and size (default 3: 21 per size)")
    p.add_argument("--stages", nargs="+", choices=STAGES)
    p.add_argument("--out", default="results/sensitivity.json")
    p.add_argument("--analyse", help="a saved run to analyse")
    p.add_argument("--alpha", type=float)
    p.add_argument("--min-effect", type=float)
    p.add_argument("--clock", choices=CLOCKS, help="with --analyse: the clock to decide on (default: both, one after the other)")
    p.add_argument("--load", type=int, default=0, help="busy loops pinned to the workers' CPU while collecting (default 0)")
    p.add_argument("--markdown", action="store_true", help="with --analyse: the docs table")
    p.add_argument("--record-fixture", metavar="OUT", help="with --analyse: write the first block of every session "
                                                            "(both clocks) to OUT, a test fixture")
    args = p.parse_args()
    if args.analyse and args.record_fixture:
        record_fixture(Path(args.analyse), Path(args.record_fixture))
        return 0
    if args.analyse:
        for clock in [args.clock] if args.clock else CLOCKS:
            table = analyse(Path(args.analyse), clock, alpha=args.alpha, min_effect=args.min_effect)
            print(f"clock: {clock}\n" + (markdown(table) if args.markdown else json.dumps(table, indent=1)))
        return 0
    collect(args)
    for clock in CLOCKS:
        print(json.dumps(analyse(Path(args.out), clock), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
