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
timings are saved, so ``--analyse`` recomputes the table for other decision settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gate import GateConfig, Side, clip_call, decide, measure, sample_values, start_workers, stop_workers  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402

SIZES = (0.10, 0.15, 0.30)
STAGES = ("preprocess", "image_encoder", "vae_encoder", "unet", "glue", "vae_decoder", "video")


def sides_for(stage: str, bundle: Path) -> list[Side]:
    inject = (str(TESTS / "gate_inject"),)
    out = [Side("base", ROOT, bundle, "working tree"), Side("aa", ROOT, bundle, "working tree (unchanged)")]
    out += [Side(f"slow{int(100 * f)}", ROOT, bundle, f"{stage} +{int(100 * f)}%",
                 env={"SFV_TEST_SLOWDOWN": f"{stage}:{f}"}, pythonpath=inject) for f in SIZES]
    return out


def collect(args) -> None:
    config = GateConfig.for_mode("quick", processes=1)
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
                                 "load_before": before["load_average"], "load_after": machine_info(1)["load_average"],
                                 "machine": before, "seconds": time.perf_counter() - start})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data))
        print(f"{stage}: {time.perf_counter() - start:.0f} s, load {before['load_average']}", flush=True)


def analyse(path: Path, **overrides) -> dict:
    data = json.loads(path.read_text())
    config = replace(GateConfig(**data["config"]), **{k: v for k, v in overrides.items() if v is not None})
    hits = {f: [] for f in SIZES}
    per_stage = {}
    others = {f: 0 for f in SIZES}
    aa_alarms, aa_trials, aa_stage_alarms = 0, 0, {}
    loads = []
    for session in data["sessions"]:
        stage, rounds = session["stage"], session["rounds"]
        loads += [session["load_before"][0], session["load_after"][0]]
        for b in range(session["blocks"]):
            block = {name: sample_values(r[b * rounds:(b + 1) * rounds]) for name, r in session["raw"].items()}
            comps, _ = decide(block["base"], block["aa"], config)
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
        "config": config.__dict__,
        "aa": {"trials": aa_trials, "false_alarms": aa_alarms, "by_stage": aa_stage_alarms},
        "ab": {str(f): {"trials": len(hits[f]), "detected": sum(h for _, h in hits[f]),
                        "missed": sorted({s for s, h in hits[f] if not h}), "other_stage_flagged": others[f]}
               for f in SIZES},
        "per_stage": per_stage,
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
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle")
    p.add_argument("--blocks", type=int, default=3, help="trials per stage and size (default 3: 21 per size)")
    p.add_argument("--stages", nargs="+", choices=STAGES)
    p.add_argument("--out", default="results/sensitivity.json")
    p.add_argument("--analyse", help="a saved run to analyse")
    p.add_argument("--alpha", type=float)
    p.add_argument("--min-effect", type=float)
    p.add_argument("--markdown", action="store_true", help="with --analyse: the docs table")
    args = p.parse_args()
    if args.analyse:
        table = analyse(Path(args.analyse), alpha=args.alpha, min_effect=args.min_effect)
        print(markdown(table) if args.markdown else json.dumps(table, indent=1))
        return 0
    collect(args)
    print(json.dumps(analyse(Path(args.out)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
