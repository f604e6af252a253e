"""The speedup table beside the paper's Table 1, and its JSON / Markdown / PNG files.

A result (``results.json``) holds one entry per configuration::

    {"name": "svd-25", "label": "SVD", "steps": 25, "guidance": true, "unet_batch": 2,
     "derived": false,            # true: totals = steps x per-step cost (full-size runs)
     "n": 3,                      # repeats behind each median
     "median": {stage: seconds}, "q1": {...}, "q3": {...},
     "speedup_unet": 35.1, "speedup_total": 4.2,   # this config's time / SF-V's: median of the per-round ratios
     "speedup_unet_q": [33.0, 36.2], "speedup_total_q": [4.0, 4.4],  # quartiles of the same per-round ratios
     "speedup_of": "per-round ratios",  # or "medians": derived rows have no rounds to pair
     "speedup_reference": "sfv-1",
     "paper": {"unet_s": 10.79, "speedup": 36.0} | null}

A speedup reads "SF-V is N times faster than this row": the row's seconds over SF-V's. Where
both were timed in the same interleaved rounds it is the median of the per-round ratios, printed
with the quartiles of those same ratios, so the band always contains the figure (a ratio of
the two medians need not lie inside the band of per-round ratios).

Stages are :data:`contract.specs.STAGES`; ``sampler`` is what the total spends outside the four
networks and preprocessing (sampler arithmetic, tensor copies, uint8 conversion).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.workload import RunConfig
from contract.atomic import atomic_path, write_json_atomic
from contract.specs import SAMPLER_STAGE, STAGES

STAGE_LABELS = {
    "preprocess": "preprocess",
    "image_encoder": "CLIP image encoder",
    "vae_encoder": "VAE encoder",
    "unet": "UNet",
    SAMPLER_STAGE: "sampler",
    "vae_decoder": "temporal VAE decoder",
}
# Paper Table 1 (SF-V, arXiv 2406.04324): UNet seconds on one A100, 14 frames at 1024x576,
# classifier-free guidance (batch 2) for SVD only.
PAPER_UNET_S = {("svd", 25): 10.79, ("svd", 16): 6.89, ("svd", 8): 3.44, ("svd", 4): 1.72, ("sfv", 1): 0.30,
                ("lcm", 8): 3.25, ("lcm", 4): 1.62, ("lcm", 2): 0.82}  # lcm: the official AnimateLCM-SVD-xt 1.1 rows
PAPER_SETTING = "one A100, 14 frames at 1024x576, UNet only"


def paper_entry(kind: str, steps: int) -> dict | None:
    """The paper's UNet time and speedup over SF-V for a configuration, if the paper has it."""
    unet = PAPER_UNET_S.get((kind, steps))
    if unet is None:
        return None
    return {"unet_s": unet, "speedup": round(unet / PAPER_UNET_S[("sfv", 1)], 1)}


def add_speedups(configs: Sequence[dict], reference: str) -> None:
    """Set ``speedup_unet`` / ``speedup_total`` of each config: its seconds over ``reference``'s.

    With interleaved samples (``samples``: one dict per round, the same rounds for every config)
    the speedup is the median of the round-by-round ratios (both measured in the same round, so
    they share its load) and ``speedup_*_q`` holds the quartiles of those same ratios; without
    (derived per-step rows) it is the ratio of the medians and has no band. ``speedup_of`` says which.
    """
    # optional: torch (the export extra)
    from benchmarks.timing import summarize

    ref = next((c for c in configs if c["name"] == reference), None)
    for c in configs:
        paired = bool(ref and c.get("samples") and ref.get("samples") and len(c["samples"]) == len(ref["samples"]))
        c["speedup_of"] = "per-round ratios" if paired else "medians"
        c["speedup_reference"] = reference if ref else None
        for key in ("unet", "total"):
            c[f"speedup_{key}"] = _ratio(c["median"][key], ref["median"][key]) if ref else None
            c[f"speedup_{key}_q"] = None
            ratios = [a[key] / b[key] for a, b in zip(c["samples"], ref["samples"]) if b[key]] if paired else []
            if ratios:
                stats = summarize(ratios)
                c[f"speedup_{key}"] = stats.median
                c[f"speedup_{key}_q"] = [stats.q1, stats.q3]


def end_to_end_ratio(configs: Sequence[dict], slow: str, fast: str) -> dict | None:
    """``slow`` / ``fast`` end to end: the median and quartiles of the round-by-round ratios (same rounds)."""
    # optional: torch (the export extra)
    from benchmarks.timing import summarize

    by_name = {c["name"]: c for c in configs}
    if slow not in by_name or fast not in by_name:
        return None
    a, b = by_name[slow], by_name[fast]
    ratios = [x["total"] / y["total"] for x, y in zip(a.get("samples") or [], b.get("samples") or []) if y["total"]]
    if not ratios:
        return {"slow": slow, "fast": fast, "median": _ratio(a["median"]["total"], b["median"]["total"]), "q": None}
    stats = summarize(ratios)
    return {"slow": slow, "fast": fast, "median": stats.median, "q": [stats.q1, stats.q3]}


def _ratio_line(r: dict) -> str:
    band = f" [quartiles {r['q'][0]:.1f}-{r['q'][1]:.1f}]" if r.get("q") else ""
    what = "median of the per-round ratios" if r.get("q") else "ratio of the medians"
    return (f"end to end, {_config_name(r['fast'])} is {r['median']:.1f}x faster than "
            f"{_config_name(r['slow'])} (full decoder): {what}{band}")


def _recipe_line(result: dict) -> str:
    recipe = result.get("recipe") or {}
    return ("best CPU recipe (python -m benchmarks.recipe, this CPU): " + ", ".join(f"{n}={c}" for n, c in recipe.items())
            + "; the other rows run ONNX Runtime fp32")


def _config_name(name: str) -> str:
    """``svd-25`` -> ``SVD 25 steps``, ``sfv-1`` -> ``SF-V 1 step`` (what a reader calls a configuration)."""
    rc = RunConfig.parse(name)
    return f"{rc.label} {rc.steps} step{'s' if rc.steps != 1 else ''}"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def with_sampler(stages: Mapping[str, float]) -> dict[str, float]:
    """Per-stage seconds, the sampler's being ``total - (sum of the other stages)``, clamped at 0: all
    the total spends outside preprocessing and the networks, so that the stages add up to it."""
    named = [k for k in STAGES if k != SAMPLER_STAGE]
    out = {k: float(stages.get(k, 0.0)) for k in named}
    out["total"] = float(stages["total"])
    out[SAMPLER_STAGE] = max(0.0, out["total"] - sum(out[k] for k in named))
    return out


# --------------------------------------------------------------------------- text


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def _x_band(c: dict, key: str) -> str:
    q = c.get(f"speedup_{key}_q")
    return f" [{q[0]:.1f}-{q[1]:.1f}]" if q and c.get("n", 1) >= 2 else ""


def _band(c: dict, stage: str) -> str:
    if c.get("n", 1) < 2 or "q1" not in c:
        return ""
    return f" [{_fmt_s(c['q1'][stage])}-{_fmt_s(c['q3'][stage])}]"


def speedup_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (the paper's Table 1 columns plus end to end).

    A speedup cell is the row's time over the reference's (SF-V): "SF-V is N times faster".
    """
    header = ["config", "steps", "CFG", "UNet s [q1-q3]", "UNet/step s", "UNet speedup of SF-V [q1-q3]",
              "end-to-end s [q1-q3]", "e2e speedup of SF-V [q1-q3]", "paper UNet s", "paper speedup"]
    rows = []
    for c in result["configs"]:
        paper = c.get("paper") or {}
        rows.append([
            c["label"] + ("*" if c.get("derived") else ""),
            str(c["steps"]),
            "yes" if c["guidance"] else "no",
            _fmt_s(c["median"]["unet"]) + _band(c, "unet"),
            _fmt_s(c["median"]["unet"] / c["steps"]),
            _fmt_x(c.get("speedup_unet")) + _x_band(c, "unet"),
            _fmt_s(c["median"]["total"]) + _band(c, "total"),
            _fmt_x(c.get("speedup_total")) + _x_band(c, "total"),
            _fmt_s(paper.get("unet_s")),
            _fmt_x(paper.get("speedup")),
        ])
    return header, rows


def speedup_notes(result: dict) -> list[str]:
    """What the speedup columns are, and each ratio read as a sentence ("SF-V 1 step is 48.9x faster than SVD 25 steps")."""
    configs = result["configs"]
    ref = next((c for c in configs if c["name"] == configs[0].get("speedup_reference")), None) if configs else None
    if ref is None:
        return []
    kinds = {c.get("speedup_of", "medians") for c in configs}
    what = ("the median of the per-round ratios (a row and SF-V are timed in the same rounds), in brackets the "
            "quartiles of those same ratios" if kinds == {"per-round ratios"} else
            "the ratio of the two medians (no paired rounds: derived rows)" if kinds == {"medians"} else
            "the median of the per-round ratios where the rows share rounds, else the ratio of the medians")
    lines = [f"speedup = a row's seconds / {_config_name(ref['name'])}'s seconds, i.e. how many times faster "
             f"{ref['label']} is; each is {what}"]
    for c in configs:
        if c is ref or c.get("speedup_unet") is None:
            continue
        if c["speedup_total"] < 1:  # a faster row than the reference (e.g. the best CPU recipe): say it that way round
            lines.append(f"{_config_name(c['name'])} is {1 / c['speedup_total']:.1f}x faster than {_config_name(ref['name'])} "
                         f"end to end ({1 / c['speedup_unet']:.1f}x in the UNet)")
            continue
        lines.append(f"{_config_name(ref['name'])} is {c['speedup_unet']:.1f}x faster than {_config_name(c['name'])} "
                     f"in the UNet, {c['speedup_total']:.1f}x end to end")
    return lines


def shares(c: dict) -> dict[str, float]:
    """Each stage's share (%) of the sum of the stage medians: they add up to 100%.

    (A median total is not the sum of the stages' medians, so shares of it need not sum to 100%.)
    """
    denominator = sum(c["median"][s] for s in STAGES)
    return {s: 100 * c["median"][s] / denominator if denominator else 0.0 for s in STAGES}


def stage_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-stage table (median seconds [quartiles], share of the stages' sum)."""
    header = ["config"] + [STAGE_LABELS[s] for s in STAGES] + ["total [q1-q3]"]
    rows = []
    for c in result["configs"]:
        share = shares(c)
        cells = [f"{_fmt_s(c['median'][s])}{_band(c, s)} ({share[s]:.0f}%)" for s in STAGES]
        rows.append([c["label"] + f" {c['steps']}"] + cells + [_fmt_s(c["median"]["total"]) + _band(c, "total")])
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def header_lines(result: dict) -> list[str]:
    """The table's header: what ran, where, at which shapes and versions."""
    # optional: torch (the export extra)
    from benchmarks.machine import describe

    m, s = result["machine"], result["settings"]
    v = m["versions"]
    shape = result["shapes"]
    lines = [
        f"backend {result['backend']}, model {result['model']['source']} "
        f"(UNet {result['model']['unet_parameters'] / 1e6:.1f} M parameters)",
        f"clip: {shape['frames']} frames at {shape['height']}x{shape['width']} px "
        f"(latents {shape['frames']}x{shape['latent_height']}x{shape['latent_width']}), decode chunk = all frames",
        f"machine: {describe(m)}",
        f"versions: torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, diffusers {v.get('diffusers')}, "
        f"python {m['python']}; {m['date']}",
        f"{s['repeats']} repeats after {s['warmup']} warm-up, configurations interleaved; medians "
        f"[quartiles]; mode {s['mode']}",
        f"paper: {PAPER_SETTING}",
    ]
    choice = s.get("thread_choice")
    if choice:
        lines.append(f"threads: {choice['chosen']} ({choice['why']})")
    if result.get("load_after"):
        lines.append(f"load average after the run: {result['load_after'][0]:.1f}")
    # optional: torch (the export extra)
    from benchmarks.machine import contention_warning

    warning = contention_warning(m)
    if warning:
        lines.append("warning: " + warning)
    if any(c.get("derived") for c in result["configs"]):
        lines.append("* derived: steps x measured per-step UNet time + stages measured once each (see per_step)")
    return lines


def format_text(result: dict) -> str:
    """The table printed by ``python -m benchmarks.speedup``."""
    parts = ["SF-V speedup beside the paper's Table 1", *header_lines(result), "",
             _text_table(*speedup_rows(result)), *speedup_notes(result), "", "per stage (median seconds [quartiles], share of the sum of the stage medians):",
             _text_table(*stage_rows(result))]
    if result.get("fast_decoder_speedup"):
        parts += ["", _ratio_line(result["fast_decoder_speedup"])]
    if result.get("recipe_speedup"):
        parts += ["", _ratio_line(result["recipe_speedup"]), _recipe_line(result)]
    check = result.get("per_step_model")
    if check:
        parts += ["", format_per_step_check(check)]
    return "\n".join(parts)


def format_markdown(result: dict) -> str:
    parts = ["# SF-V speedup beside the paper's Table 1", ""] + [f"- {l}" for l in header_lines(result)]
    parts += ["", _md_table(*speedup_rows(result)), ""] + [f"- {l}" for l in speedup_notes(result)]
    parts += ["", "## Per stage (median seconds [quartiles], share of the sum of the stage medians)", "",
              _md_table(*stage_rows(result))]
    if result.get("fast_decoder_speedup"):
        parts += ["", _ratio_line(result["fast_decoder_speedup"])]
    if result.get("recipe_speedup"):
        parts += ["", _ratio_line(result["recipe_speedup"]), "", _recipe_line(result)]
    check = result.get("per_step_model")
    if check:
        parts += ["", "## Per-step model check", "", "```", format_per_step_check(check), "```"]
    return "\n".join(parts) + "\n"


PER_STEP_FAILED = ("What it means: steps x one call's time (how per-step mode states the full-size totals) did not "
                   "predict this run's loops; the measured loops in the table stand, the per-step model is unconfirmed")


def format_per_step_check(check: dict) -> str:
    """Predicted (steps x per-call) vs measured full-loop times, with the relative error."""
    lines = ["per-step model (stages measured one call at a time) vs the measured full loops:",
             f"{'config':<10} {'UNet pred':>10} {'UNet meas':>10} {'err':>7} {'e2e pred':>10} {'e2e meas':>10} {'err':>7}"]
    for name, row in check["configs"].items():
        lines.append(
            f"{name:<10} {_fmt_s(row['unet_predicted']):>10} {_fmt_s(row['unet_measured']):>10} "
            f"{100 * row['unet_error']:>+6.1f}% {_fmt_s(row['total_predicted']):>10} "
            f"{_fmt_s(row['total_measured']):>10} {100 * row['total_error']:>+6.1f}%"
        )
    if check["within_5_percent"]:
        lines.append(f"per-step model check PASSED: largest |error| {100 * check['max_abs_error']:.1f}% (target <= 5%)")
    else:
        lines.append(f"WARNING: per-step model check FAILED: largest |error| {100 * check['max_abs_error']:.1f}% "
                     f"(target <= 5%). {PER_STEP_FAILED}. {check.get('reason', '')}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def plot(result: dict, path: str | os.PathLike) -> None:
    """``speedup.png``: stacked per-stage bars per configuration, absolute and as shares."""
    # optional: matplotlib (the bench extra)
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    # optional: matplotlib (the bench extra)
    import matplotlib.pyplot as plt

    configs = result["configs"]
    labels = [f"{c['label']} {c['steps']} step{'s' if c['steps'] > 1 else ''}" + ("*" if c.get("derived") else "")
              for c in configs]
    colors = dict(zip(STAGES, ["#bbbbbb", "#4c72b0", "#55a868", "#c44e52", "#8172b2", "#dd8452"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.9 * len(configs) + 2.2))
    for ax, share in zip(axes, (False, True)):
        left = [0.0] * len(configs)
        for stage in STAGES:
            # Shares divide by the sum of the stage medians (see shares()), so each bar is 100%.
            values = [shares(c)[stage] if share else c["median"][stage] for c in configs]
            ax.barh(labels, values, left=left, color=colors[stage], label=STAGE_LABELS[stage])
            left = [l + v for l, v in zip(left, values)]
        ax.invert_yaxis()
        ax.set_xlabel("share of the stages' sum (%)" if share else "seconds (median per stage)")
        if not share:
            ax.set_xlim(0, 1.25 * max(left))  # room for the labels
            for y, (end, c) in enumerate(zip(left, configs)):
                # At the end of the stacked bar; the text is the median end-to-end time.
                ax.text(end, y, f" {_fmt_s(c['median']['total'])} s", va="center", fontsize=8)
    axes[0].set_title(f"{result['model']['source']} on {result['backend']}, "
                      f"{result['shapes']['frames']} frames {result['shapes']['height']}x{result['shapes']['width']}")
    axes[1].set_title("where the time goes")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(STAGES), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_json_and_markdown(out: str | os.PathLike, stem: str, result: dict, text: str) -> tuple[Path, Path]:
    """``out/STEM.json`` (``result``) and ``out/STEM.md`` (``text``, the printed table), each written
    atomically (an interrupted run leaves no half file); return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{stem}.json", out / f"{stem}.md"
    write_json_atomic(paths[0], result)
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")
    return paths


def write_results(result: dict, out: str | os.PathLike, prefix: str = "results", chart: str | None = "speedup.png") -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` (and the chart) into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{prefix}.json", "markdown": out / f"{prefix}.md"}
    write_json_atomic(paths["json"], result)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(format_markdown(result))
    if chart:
        paths["png"] = out / chart
        plot(result, paths["png"])
    return paths
