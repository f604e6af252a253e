"""The latency gate runs in quick mode, passes on this build, and fails on an injected slowdown.

Each case runs ``python -m pytest benchmarks/`` in a subprocess on the session's tiny bundle,
exactly as CI or a user would; this is also how the default test suite runs the quick gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run_gate(bundle, extra_env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFV_BENCH_QUICK": "1", "SFV_BENCH_BUNDLE": str(bundle), **extra_env}
    env.pop("SFV_BENCH_UPDATE_BASELINE", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_gate_passes_without_regression(tiny_bundle):
    proc = _run_gate(tiny_bundle, {"SFV_BENCH_INJECT_SLEEP": ""})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "6 passed" in out
    # pytest-benchmark recorded the timed side of each ratio (its table lists the tests).
    assert "test_backend_ratio[unet_b1]" in out and "test_multi_step_vs_one_step" in out


def test_gate_fails_on_injected_slowdown(tiny_bundle):
    # 0.3 s per ONNX Runtime call of the image encoder: its torch/ORT ratio collapses far below the floor.
    proc = _run_gate(tiny_bundle, {"SFV_BENCH_INJECT_SLEEP": "image_encoder:0.3"}, "-x", "-k", "backend_ratio",
                     "--benchmark-disable")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "latency regression: backend/image_encoder" in out


def test_slowed_engine_adds_its_delay_and_keeps_outputs(tiny_model):
    import time

    from benchmarks.gate import inject, parse_injection
    from benchmarks.workload import build_calls
    from engines.factory import torch_engines

    engines, config = torch_engines(tiny_model, networks=["image_encoder"])
    slowed = inject(engines, parse_injection("image_encoder:0.05"))["image_encoder"]
    _, inputs = build_calls(config, 2, 64, 64, ["image_encoder"])["image_encoder"]
    want = engines["image_encoder"].run(inputs)["image_embeds"]
    start = time.perf_counter()
    got = slowed.run(inputs)["image_embeds"]
    assert time.perf_counter() - start >= 0.05
    assert torch.equal(got, want)


def test_bad_injection_spec_names_the_problem():
    from benchmarks.errors import BenchmarkError
    from benchmarks.gate import parse_injection

    with pytest.raises(BenchmarkError, match="unknown network 'not_a_network'"):
        parse_injection("not_a_network:0.1")
    with pytest.raises(BenchmarkError, match="is not SECONDS"):
        parse_injection("unet:fast")


@pytest.mark.parametrize(
    "text, want",
    [("", {}), ("0.2", {"image_encoder": 0.2, "vae_encoder": 0.2, "unet": 0.2, "vae_decoder": 0.2}),
     ("unet:0.1, vae_decoder:0.5", {"unet": 0.1, "vae_decoder": 0.5})],
)
def test_parse_injection(text, want):
    from benchmarks.gate import parse_injection

    assert parse_injection(text) == want


def test_check_proxy_flags_growth_only():
    from benchmarks.gate import DEFAULT_TOLERANCE, check_proxy

    base = {"nodes": 100, "parameters": 10, "bytes": 1000, "flops": 5000}
    assert check_proxy("unet", {"nodes": 101, "parameters": 10, "bytes": 900, "flops": 5000}, base, DEFAULT_TOLERANCE) == []
    problems = check_proxy("unet", {"nodes": 110, "parameters": 11, "bytes": 1000, "flops": 5100}, base, DEFAULT_TOLERANCE)
    assert len(problems) == 3
    assert any("unet.nodes: 110 is 10.0% above baseline 100" in p for p in problems)
    assert any("unet.parameters: 11 vs baseline 10" in p for p in problems)
    assert any("unet.flops" in p for p in problems)


def test_ratio_floor_and_baseline_roundtrip(tmp_path):
    from benchmarks.gate import load_baseline, ratio_floor, save_baseline

    path = tmp_path / "baseline.json"
    machine = {"date": "d", "cpu": "c", "cores": 2, "threads": 1, "load_average": [1, 1, 1], "versions": {}}
    save_baseline({"ratios": {"backend/unet_b1": 3.0}, "proxies": {"unet": {"nodes": 5}}}, "quick", machine, path)
    save_baseline({"ratios": {"backend/unet_b1": 4.0}}, "full", machine, path)
    data = load_baseline(path)
    assert data["ratios"] == {"quick": {"backend/unet_b1": 3.0}, "full": {"backend/unet_b1": 4.0}}
    assert data["proxies"] == {"unet": {"nodes": 5}}  # a run without proxies keeps the old ones
    assert ratio_floor(data, "quick", "backend/unet_b1") == pytest.approx(1.5)
    assert ratio_floor(data, "quick", "missing") is None


def test_paired_ratio_interleaves_and_drops_warmup():
    from benchmarks.gate import paired_ratio

    order = []
    ratio, num, den, calls = paired_ratio(lambda: order.append("a"), lambda: order.append("b"), rounds=3, warmup=1,
                                          min_sample_s=0.0)
    assert calls == (1, 1)
    assert order == ["a", "b"] + ["a", "b"] * 4  # one calibration call each, then interleaved rounds
    assert len(num) == len(den) == 3 and ratio > 0


def test_calls_per_sample_powers_of_two(monkeypatch):
    import benchmarks.gate as gate

    ticks = iter([0.0, 0.004])  # one call takes 4 ms
    monkeypatch.setattr(gate.time, "perf_counter", lambda: next(ticks))
    assert gate.calls_per_sample(lambda: None, min_sample_s=0.05) == 16  # 16 x 4 ms >= 50 ms


def test_missing_baseline_names_the_update_command(tmp_path):
    from benchmarks.errors import BenchmarkError
    from benchmarks.gate import load_baseline

    with pytest.raises(BenchmarkError, match="SFV_BENCH_UPDATE_BASELINE=1"):
        load_baseline(tmp_path / "nope.json")
