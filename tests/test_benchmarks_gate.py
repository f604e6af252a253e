"""The latency gates: the pytest gate passes on a fresh export, the A/B gate's pieces decide as documented.

The sensitivity of the A/B gate to injected slowdowns is in ``test_benchmarks_sensitivity.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the pytest gate


@pytest.mark.slow  # wall-clock ratios against a baseline recorded on one CPU: a loaded or different machine moves them
def test_pytest_gate_passes_on_a_fresh_export(tiny_bundle):
    # tiny_bundle is exported in this session, as on a fresh clone (its config holds tuples
    # where the committed baselines hold lists: they must compare equal).
    env = {**os.environ, "SFV_BENCH_QUICK": "1", "SFV_BENCH_BUNDLE": str(tiny_bundle)}
    env.pop("SFV_BENCH_UPDATE_BASELINE", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "6 passed" in out
    assert "test_backend_ratio[unet_b1]" in out and "test_multi_step_vs_one_step" in out  # pytest-benchmark's table


def test_ratio_floor_and_baseline_roundtrip(tmp_path):
    from benchmarks.ratios import load_baseline, ratio_floor, save_baseline

    path = tmp_path / "baseline.json"
    machine = {"date": "d", "cpu": "c", "cores": 2, "threads": 1, "load_average": [1, 1, 1], "versions": {}}
    save_baseline({"ratios": {"backend/unet_b1": 3.0}}, "quick", machine, path)
    save_baseline({"ratios": {"backend/unet_b1": 4.0}}, "full", machine, path)
    data = load_baseline(path)
    assert data["ratios"] == {"quick": {"backend/unet_b1": 3.0}, "full": {"backend/unet_b1": 4.0}}
    assert ratio_floor(data, "quick", "backend/unet_b1") == pytest.approx(1.5)
    assert ratio_floor(data, "quick", "missing") is None


def test_paired_ratio_interleaves_and_drops_warmup():
    from benchmarks.ratios import paired_ratio

    order = []
    ratio, num, den, calls = paired_ratio(lambda: order.append("a"), lambda: order.append("b"), rounds=3, warmup=1,
                                          min_sample_s=0.0)
    assert calls == (1, 1)
    assert order == ["a", "b"] + ["a", "b"] * 4  # one calibration call each, then interleaved rounds
    assert len(num) == len(den) == 3 and ratio > 0


def test_pytest_gate_ratios_at_one_thread_leave_out_time_off_the_cpu():
    """At 1 thread the same-run ratios are timed on the process CPU clock: a call that waits (as a
    preempted one does) costs nothing there, while on the wall clock it weighs as much as work."""
    import time

    from benchmarks.ratios import paired_ratio, ratio_clock

    def work():
        end = time.process_time() + 0.01
        while time.process_time() < end:
            pass

    assert ratio_clock(1) is time.process_time and ratio_clock(2) is time.perf_counter
    waits = lambda: time.sleep(0.01)
    cpu, *_ = paired_ratio(waits, work, rounds=3, warmup=0, min_sample_s=0.0, clock=ratio_clock(1))
    wall, *_ = paired_ratio(waits, work, rounds=3, warmup=0, min_sample_s=0.0, clock=time.perf_counter)
    assert cpu < 0.2 and wall > 0.5


def test_missing_baselines_name_the_update_command(tmp_path):
    from benchmarks import proxies
    from benchmarks.errors import BenchmarkError
    from benchmarks.ratios import load_baseline

    with pytest.raises(BenchmarkError, match="SFV_BENCH_UPDATE_BASELINE=1"):
        load_baseline(tmp_path / "nope.json")
    with pytest.raises(BenchmarkError, match="python -m benchmarks.proxies --update"):
        proxies.load_baseline(tmp_path / "nope.json")


# --------------------------------------------------------------------------- proxies


def _proxies(unet_nodes=10, calls=1, mean=(0.5, 0.5)):
    return {"networks": {"unet": {"nodes": unet_nodes, "flops": 100}},
            "clips": {"sfv-1": {"engine_calls": {"unet": calls}, "host_bytes": {"unet": 64}}},
            "model_config": {"image_mean": mean}}


def test_proxies_compare_normalises_types_and_flags_increases_only():
    from benchmarks.proxies import compare

    assert compare(_proxies(mean=(0.5, 0.5)), json.loads(json.dumps(_proxies(mean=[0.5, 0.5])))) == ([], [])
    increases, changes = compare(_proxies(unet_nodes=11, calls=2), _proxies())
    assert increases == ["clips.sfv-1.engine_calls.unet: 1 -> 2 (+100.00%)", "networks.unet.nodes: 10 -> 11 (+10.00%)"]
    assert changes == []
    increases, changes = compare(_proxies(unet_nodes=9), _proxies())
    assert increases == [] and changes == ["networks.unet.nodes: 10 -> 9 (-10.00%)"]


def test_proxies_refuse_another_model_config():
    from benchmarks.errors import BenchmarkError
    from benchmarks.proxies import compare

    with pytest.raises(BenchmarkError, match="model config differs"):
        compare(_proxies(mean=(0.4, 0.5)), _proxies())


def test_graph_flops_counts_matmul_and_conv():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from benchmarks.proxies import graph_flops

    w = helper.make_tensor("w", TensorProto.FLOAT, [5, 7], np.zeros(35, np.float32))
    k = helper.make_tensor("k", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("Conv", ["img", "k"], ["z"], pads=[1, 1, 1, 1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5]),
              helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    inputs = {"x": np.zeros((3, 5), np.float32), "img": np.zeros((1, 3, 8, 8), np.float32)}
    # MatMul [3, 5] x [5, 7]: 2 * 3 * 7 * 5; Conv 3 -> 4 channels, 3x3, 8x8 out: 2 * (4 * 8 * 8) * (3 * 3 * 3)
    assert graph_flops(onnx.load_from_string(model.SerializeToString()), inputs) == 2 * 3 * 7 * 5 + 2 * 256 * 27


# --------------------------------------------------------------------------- the A/B gate's pieces


@pytest.mark.parametrize("base, head, verdict", [
    ([1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99], [1.20, 1.21, 1.19, 1.22, 1.18, 1.20, 1.21, 1.19], "slower"),
    ([1.20, 1.21, 1.19, 1.22, 1.18, 1.20, 1.21, 1.19], [1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99], "faster"),
    ([1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99], [1.01, 1.00, 1.02, 0.99, 1.00, 1.01, 0.98, 1.00], "same"),
    # a clear but tiny shift (2%) is below the minimum effect: not a regression
    ([1.000, 1.001, 1.002, 1.003, 1.004, 1.005, 1.006, 1.007], [1.020, 1.021, 1.022, 1.023, 1.024, 1.025, 1.026, 1.027], "same"),
    # medians 30% apart but the samples overlap wildly: too noisy to call
    ([1.0, 2.0, 0.5, 1.0, 3.0, 0.4], [1.3, 0.5, 2.5, 1.3, 0.4, 3.0], "unsure"),
])
def test_compare_verdicts(base, head, verdict):
    from benchmarks.decide import compare

    c = compare("unet", base, head, alpha=0.01, min_effect=0.05)
    assert c.verdict == verdict, c
    assert 0 <= c.confidence <= 1


def test_compare_keeps_the_unpaired_test_where_it_has_more_power():
    """Rounds whose own noise outweighs a clear 12% shift of the groups: the U test decides."""
    import math

    from scipy.stats import mannwhitneyu, wilcoxon

    from benchmarks.decide import compare

    base = [1 + 0.015 * i for i in range(15)]
    head = [1.12 * b for b in reversed(base)]  # slowest head rounds meet the fastest base rounds
    paired = wilcoxon([math.log(h / b) for b, h in zip(base, head)], alternative="greater").pvalue
    unpaired = mannwhitneyu(head, base, alternative="greater").pvalue
    assert paired > 0.001 > 2 * unpaired  # alone, the paired test would miss it
    c = compare("sampler", base, head)
    assert c.verdict == "slower" and c.p_slower == pytest.approx(2 * unpaired), c


def test_compare_needs_samples():
    from benchmarks.decide import compare
    from benchmarks.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="at least 2 samples"):
        compare("unet", [1.0], [1.0, 2.0])
    with pytest.raises(BenchmarkError, match="paired by round"):
        compare("unet", [1.0, 1.0, 1.0], [1.0, 2.0])


def test_compare_pairs_rounds_so_that_load_drift_cancels():
    """A 15% slowdown under load that doubles between rounds: lost as two groups, found when paired."""
    from scipy.stats import mannwhitneyu

    from benchmarks.decide import compare

    load = [1.0, 2.0, 1.3, 1.8, 1.1, 1.6, 2.2, 1.2, 1.9, 1.4, 1.05, 1.7, 2.1, 1.25, 1.5]
    jitter = [1.00, 1.02, 0.99, 1.01, 0.98, 1.00, 1.03, 0.99, 1.01, 1.02, 0.98, 1.00, 1.01, 0.99, 1.02]
    base = [0.1 * x for x in load]
    head = [0.1 * x * 1.15 * j for x, j in zip(load, jitter)]
    assert mannwhitneyu(head, base, alternative="greater").pvalue > 0.05  # unpaired: not even close
    c = compare("unet", base, head)
    assert c.verdict == "slower" and c.ratio == pytest.approx(1.15, abs=0.02), c
    assert c.p_slower < 0.001  # from the paired test: the U test's p is > 0.05
    # Reversing the pairing (head's rounds against other rounds of base) must lose it again,
    # so the test above passes because of the pairing, not because of the data.
    assert compare("unet", base, head[::-1]).verdict != "slower"


def test_gate_config_refuses_rounds_that_cannot_reach_alpha():
    from benchmarks.errors import BenchmarkError
    from benchmarks.gate import GateConfig

    GateConfig.for_mode("quick", rounds=7).check()  # 2 / C(14, 7) = 0.00058 < 0.001
    with pytest.raises(BenchmarkError, match="use --rounds >= 7"):
        GateConfig.for_mode("quick", rounds=6).check()  # 2 / C(12, 6) = 0.0022


def test_round_order_alternates_and_rotates():
    from benchmarks.gate import round_order

    assert [round_order(["a", "b"], r) for r in range(4)] == [["a", "b"], ["b", "a"], ["b", "a"], ["a", "b"]]
    firsts = [round_order(["a", "b", "c"], r)[0] for r in range(6)]
    assert sorted(firsts) == ["a", "a", "b", "b", "c", "c"]  # each side goes first equally often


def test_clip_stages_derives_the_sampler_when_a_revision_has_none():
    from benchmarks.gate import clip_stages, sample_values

    old = {"preprocess": 0.1, "image_encoder": 0.2, "vae_encoder": 0.3, "unet": 1.0, "vae_decoder": 0.5, "total": 2.5,
           "video": 0.2, "clip": 2.7, "unet_calls": 2}
    stages = clip_stages(old)
    assert stages["sampler"] == pytest.approx(0.4) and stages["end_to_end"] == 2.7 and "total" not in stages
    new = clip_stages({**old, "sampler": 0.05})
    assert new["sampler"] == 0.05  # a revision's own figure wins
    values = sample_values([[old, {**old, "unet": 3.0}, {**old, "unet": 2.0}]])
    assert values["unet"] == [1.0]  # one sample per round: the fastest of its clips


def test_worker_cpu_clock_leaves_out_time_off_the_cpu():
    """On the CPU clock the runtime's ``time.perf_counter()`` reads this process's CPU seconds: a
    sleep (like preemption by another process) adds nothing; spinning adds its CPU time."""
    import time

    from benchmarks.ab_worker import on_clock

    def stage(work):
        start = time.perf_counter()  # as runtime.pipeline reads it
        work()
        return time.perf_counter() - start

    def spin():
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass

    assert on_clock("wall", lambda: stage(lambda: time.sleep(0.05))) >= 0.05
    assert on_clock("cpu", lambda: stage(lambda: time.sleep(0.05))) < 0.01
    assert on_clock("cpu", lambda: stage(spin)) >= 0.05
    assert time.perf_counter is on_clock.__globals__["WALL"]  # put back


def test_worker_maps_options_onto_older_signatures():
    from benchmarks.ab_worker import _call_kwargs

    class Old:
        def __call__(self, image, *, num_frames=None, height=None, steps=25, progress=True):
            pass

    kwargs, dropped = _call_kwargs(Old(), {"frames": 4, "height": 64, "steps": 2, "max_guidance": 3.0})
    assert kwargs == {"num_frames": 4, "height": 64, "steps": 2} and dropped == ["max_guidance"]


def test_gate_cli_refuses_what_it_cannot_compare(tmp_path):
    from benchmarks.gate import main

    assert main(["--out", str(tmp_path)]) == 2
    assert main(["--base", "no-such-revision-xyz", "--bundle", str(tmp_path), "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_gate_cli_a_a_exits_0(tiny_bundle, tmp_path):
    """``python -m benchmarks.gate --base HEAD`` on the tree itself: an A/A run, no regression."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gate", "--base", "HEAD", "--bundle", str(tiny_bundle),
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    result = json.loads((tmp_path / "gate.json").read_text())
    assert result["regressions"] == [] and {s["stage"] for s in result["stages"]} >= {"unet", "sampler", "video", "end_to_end"}
    assert (tmp_path / "gate.md").read_text().startswith("### Latency gate")
