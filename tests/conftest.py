"""Shared fixtures: a tiny random SVD-architecture model written in the diffusers layout and
loaded back through the same code path as real weights, and a tiny exported bundle."""

from __future__ import annotations

import os

import pytest
import torch


def _cpu_line() -> str:
    from contract.environment import cpu_model, vector_extensions

    ext = vector_extensions()
    return f"cpu: {cpu_model()} ({', '.join(ext) if ext else 'no AVX2'}), {os.cpu_count()} logical CPUs"


def pytest_report_header(config):
    """The CPU model and vector extensions head the test log: fast paths (int8, bf16, OpenVINO)
    take different kernels on AVX2-only and AVX-512 machines, so a result names its CPU."""
    return _cpu_line()


def pytest_sessionstart(session):
    # `pytest -q` (the CI command) hides the report header; the CPU line is printed all the same.
    if session.config.option.verbose < 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(_cpu_line())


def pytest_configure(config):
    # Tiny networks: one thread is faster than two on a shared 2-core machine (less contention).
    torch.set_num_threads(int(os.environ.get("SFV_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in models go to a per-session cache, never the user's."""
    if "SFV_CACHE" not in os.environ:
        os.environ["SFV_CACHE"] = str(tmp_path_factory.mktemp("sfv-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(_isolated_cache):
    from networks.models import builtin_model_dir

    return builtin_model_dir("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from networks.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model, tmp_path_factory):
    """All four tiny networks exported to ONNX (fp32) and validated; returns the bundle dir."""
    from export.onnx import export_bundle

    out = tmp_path_factory.mktemp("bundle")
    export_bundle(tiny_model, out)
    return out
