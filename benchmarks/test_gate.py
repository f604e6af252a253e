"""Latency-regression gate (pytest-benchmark). Run: ``python -m pytest benchmarks/ -q`` (CI: ``SFV_BENCH_QUICK=1``).

Fails when:

- ONNX Runtime loses ground to eager PyTorch on a network call (same-run ratio, against
  ``benchmarks/baseline.json``);
- an SVD multi-step clip is no longer that many times slower than an SF-V one-step clip
  (the one-step path got slower, same run, both on ONNX Runtime);
- a deterministic proxy grew (graph nodes, FLOPs, weights, bytes, engine calls or host<->engine
  bytes per clip) against ``benchmarks/proxies.json`` (:mod:`benchmarks.proxies`).

Code changes are timed against a base revision by ``python -m benchmarks.gate --base REF``.

pytest-benchmark records the ONNX Runtime side of each ratio (and the one-step clip), so
``--benchmark-save=NAME`` / ``--benchmark-compare=NAME --benchmark-compare-fail=median:10%``
gate on absolute latency where the machine is stable. See docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from benchmarks.proxies import UPDATE_COMMAND, compare, load_baseline, measure
from benchmarks.ratios import paired_ratio, ratio_clock, ratio_floor, update_requested
from benchmarks.workload import build_calls, synthetic_image
from runtime.pipeline import VideoPipeline

GATED_CALLS = ("image_encoder", "vae_encoder", "unet_b1", "vae_decoder")


def _runner(benchmark):
    """Drive paired rounds with pytest-benchmark's pedantic mode (plain loops if it is disabled)."""
    if benchmark.disabled:
        return None
    return lambda target, setup, rounds, warmup: benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup)


def _gate_ratio(name, value, baseline, settings, recorder, detail):
    recorder["ratios"][name] = value
    if update_requested():
        pytest.skip(f"recorded {name} = {value:.3f} for the baseline")
    floor = ratio_floor(baseline, settings.mode, name)
    if floor is None:
        pytest.fail(f"baseline has no {settings.mode} ratio {name!r}; record it (docs/benchmarks.md, 'Updating the baseline')")
    assert value >= floor, (
        f"latency regression: {name} = {value:.2f}, below the floor {floor:.2f} "
        f"(baseline {baseline['ratios'][settings.mode][name]:.2f} - {100 * baseline['tolerance']['ratio']:.0f}%); {detail}"
    )


@pytest.mark.parametrize("call", GATED_CALLS)
def test_backend_ratio(call, benchmark, gate_engines, gate_model, gate_settings, gate_baseline, gate_recorder):
    """torch / ONNX Runtime time of one network call (> 1: ONNX Runtime is faster)."""
    s = gate_settings
    c = gate_model.config
    network, inputs = build_calls(c, s.frames, c.default_height, c.default_width, [call])[call]
    torch_engine, ort_engine = getattr(gate_engines["torch"], network), getattr(gate_engines["onnxruntime"], network)
    torch_engine.run(inputs), ort_engine.run(inputs)  # activate both outside the timed rounds
    ratio, t_torch, t_ort, calls = paired_ratio(lambda: torch_engine.run(inputs), lambda: ort_engine.run(inputs),
                                                s.rounds, s.warmup, _runner(benchmark), clock=ratio_clock(s.threads))
    # pytest-benchmark's times are of calls[1] back-to-back ONNX Runtime calls.
    benchmark.extra_info.update(ratio=ratio, torch_median=sorted(t_torch)[len(t_torch) // 2], calls_per_round=calls[1])
    _gate_ratio(f"backend/{call}", ratio, gate_baseline, s, gate_recorder,
                f"ONNX Runtime {sorted(t_ort)[len(t_ort) // 2]:.4f} s vs torch {sorted(t_torch)[len(t_torch) // 2]:.4f} s")


def test_multi_step_vs_one_step(benchmark, gate_engines, gate_model, gate_settings, gate_baseline, gate_recorder):
    """SVD ``multi_steps`` steps with guidance / SF-V one step, end to end on ONNX Runtime."""
    s = gate_settings
    pipe = VideoPipeline(gate_engines["onnxruntime"])
    c = gate_model.config
    image = synthetic_image(c.default_height, c.default_width)
    common = dict(num_frames=s.frames, seed=0, progress=False, output="frames")
    svd = lambda: pipe(image, steps=s.multi_steps, min_guidance=1.0, max_guidance=3.0, **common)
    sfv = lambda: pipe(image, steps=1, min_guidance=1.0, max_guidance=1.0, **common)
    sfv()  # activate the engines outside the timed rounds
    ratio, t_svd, t_sfv, _ = paired_ratio(svd, sfv, s.rounds, s.warmup, _runner(benchmark), min_sample_s=0.0,
                                          clock=ratio_clock(s.threads))
    benchmark.extra_info.update(ratio=ratio, multi_steps=s.multi_steps)
    _gate_ratio(f"steps/svd-{s.multi_steps}_over_sfv-1", ratio, gate_baseline, s, gate_recorder,
                f"SF-V one step {sorted(t_sfv)[len(t_sfv) // 2]:.3f} s, SVD {s.multi_steps} steps "
                f"{sorted(t_svd)[len(t_svd) // 2]:.3f} s")


def test_proxies(gate_bundle):
    """Graph nodes, FLOPs, weights, bytes, engine calls and host<->engine bytes per clip vs proxies.json."""
    measured = measure(gate_bundle.root)
    assert all(v["flops"] > 0 and v["nodes"] > 0 for v in measured["networks"].values())
    increases, changes = compare(measured, load_baseline())
    if changes:
        print("proxies changed (no increase):\n" + "\n".join(changes))
    assert not increases, (f"deterministic proxies increased (record them with `{UPDATE_COMMAND}` if intended):\n"
                           + "\n".join(increases))
