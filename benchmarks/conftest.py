"""Fixtures of the latency-regression gate: settings, the tiny model and bundle, engines, baseline.

Options (each also an environment variable, documented in :mod:`benchmarks.ratios`):
``--bench-quick`` (``SFV_BENCH_QUICK=1``), ``--bench-bundle DIR`` (``SFV_BENCH_BUNDLE``),
``--bench-threads N`` (``SFV_BENCH_THREADS``).
"""

from __future__ import annotations

import os

import pytest

from benchmarks.ratios import GateSettings, load_baseline, save_baseline, update_requested
from benchmarks.workload import ensure_bundle
from contract.bundle import Bundle
from engines.factory import model_engines, pipeline_engines


def pytest_addoption(parser):
    group = parser.getgroup("sfv-bench", "SF-V latency gate")
    group.addoption("--bench-quick", action="store_true", default=None, help="CI mode (also SFV_BENCH_QUICK=1)")
    group.addoption("--bench-bundle", default=None, help="exported tiny bundle to use (also SFV_BENCH_BUNDLE)")
    group.addoption("--bench-threads", type=int, default=None, help="intra-op threads (also SFV_BENCH_THREADS; default 1)")


@pytest.fixture(scope="session")
def gate_settings(request):
    # optional: torch (the export extra)
    from benchmarks.timing import set_threads

    settings = GateSettings.from_env(quick=request.config.getoption("--bench-quick"),
                                     threads=request.config.getoption("--bench-threads"))
    set_threads(settings.threads)
    return settings


@pytest.fixture(scope="session")
def gate_model(tmp_path_factory):
    # optional: diffusers, safetensors, torch, transformers (the export extra)
    from networks.models import load_model

    if "SFV_CACHE" not in os.environ:  # never write into the user's cache from a test run
        os.environ["SFV_CACHE"] = str(tmp_path_factory.mktemp("sfv-cache"))
    return load_model("tiny")


@pytest.fixture(scope="session")
def gate_bundle(request, gate_model):
    path = request.config.getoption("--bench-bundle") or os.environ.get("SFV_BENCH_BUNDLE")
    if path:
        return Bundle.load(path)
    return ensure_bundle("tiny")


@pytest.fixture(scope="session")
def gate_baseline():
    if update_requested():
        return None
    return load_baseline()


@pytest.fixture(scope="session")
def gate_engines(gate_model, gate_bundle, gate_settings):
    """``{"onnxruntime": Engines, "torch": Engines}`` from the engine factory."""
    engines = {"onnxruntime": pipeline_engines(gate_bundle, "onnxruntime", threads=gate_settings.threads),
               "torch": model_engines(gate_model)}
    yield engines
    for group in engines.values():
        for engine in group.all():
            engine.deactivate()


@pytest.fixture(scope="session")
def gate_recorder(request, gate_settings):
    """Collects measured ratios; with SFV_BENCH_UPDATE_BASELINE=1 they are written at the end."""
    recorded = {"ratios": {}}
    yield recorded
    # optional: torch (the export extra)
    from benchmarks.machine import machine_info

    if update_requested() and not request.session.testsfailed:
        save_baseline(recorded, gate_settings.mode, machine_info(gate_settings.threads))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # Saved runs say how they were measured, so --benchmark-compare compares like with like.

    output_json["sfv"] = GateSettings.from_env(quick=config.getoption("--bench-quick")).__dict__
