"""The Polygraphy loader chain: strongly typed, no precision flag (TensorRT mocked at the boundary only).

Calling the chain needs TensorRT and a GPU. Here the real Polygraphy loaders run against a
stand-in ``tensorrt`` module (a ``MagicMock`` that records every call), which is exactly the
boundary: what Polygraphy asks TensorRT to do is what a real build would do.
"""

from __future__ import annotations

import sys
from unittest import mock

import pytest

pytest.importorskip("polygraphy")

from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, PostprocessConfig  # noqa: E402

from contract.environment import check_tensorrt_version  # noqa: E402
from contract.errors import BackendUnavailableError  # noqa: E402
from contract.specs import ModelConfig, build_specs  # noqa: E402
from export.trt_build import (  # noqa: E402
    GIB,
    PRECISIONS,
    BuildOptions,
    WorkspaceLimit,
    create_config,
    engine_loader,
)
from contract.trt_profiles import default_ranges, network_profile  # noqa: E402

SPECS = build_specs(ModelConfig())
STRONGLY_TYPED_BIT = 5  # any bit position: the test checks that exactly this one is requested
WEAK_TYPING_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")


def _profile(network):
    return network_profile(SPECS[network], ModelConfig(), default_ranges(ModelConfig()))


@pytest.fixture
def fake_trt(monkeypatch):
    """A recording ``tensorrt`` 11.4 module, with a network whose inputs are the UNet's."""
    trt = mock.MagicMock(name="tensorrt")
    trt.__version__ = "11.4.0"
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = STRONGLY_TYPED_BIT
    trt.OnnxParser.return_value.num_errors = 0
    trt.OnnxParser.return_value.parse_from_file.return_value = True
    network = trt.Builder.return_value.create_network.return_value
    inputs = []
    for name in SPECS["unet"].input_names:
        tensor = mock.MagicMock(name=name)
        tensor.name = name
        inputs.append(tensor)
    network.num_inputs = len(inputs)
    network.get_input.side_effect = lambda i: inputs[i]
    network.num_layers = 0
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    _forget_tensorrt()
    yield trt
    _forget_tensorrt()  # Polygraphy's lazy modules must not keep the stand-in for later tests


def _forget_tensorrt():
    """Drop the module Polygraphy's lazy ``tensorrt`` imports resolved to, so the next use imports again."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy"):
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule" and isinstance(vars(value).get("module"), mock.MagicMock):
                object.__setattr__(value, "module", None)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_loader_chain_is_strongly_typed_without_precision_flags(fake_trt, precision):
    loader = engine_loader(f"b/unet.{precision}.onnx", _profile("unet"), BuildOptions(precision=precision, workspace_gib=2))
    assert isinstance(loader, EngineFromNetwork)
    assert isinstance(loader._network, NetworkFromOnnxPath) and loader._network.strongly_typed is True

    builder, network, parser = loader._network()
    (call,) = fake_trt.Builder.return_value.create_network.call_args_list
    assert call.kwargs["flags"] == 1 << STRONGLY_TYPED_BIT  # strongly typed, nothing else
    parser.parse_from_file.assert_called_once_with(f"b/unet.{precision}.onnx")

    loader._config(builder, network)
    config = fake_trt.Builder.return_value.create_builder_config.return_value
    assert config.set_flag.call_args_list == []  # no builder flag at all, so no precision flag
    flagged = {c.args[0] for c in config.clear_flag.call_args_list}
    for name in WEAK_TYPING_FLAGS:
        assert getattr(fake_trt.BuilderFlag, name) not in flagged
    touched = {c[0].split(".")[0] for c in config.mock_calls}
    assert not touched & {"int8_calibrator", "set_calibration_profile", "algorithm_selector"}
    config.set_memory_pool_limit.assert_called_once_with(fake_trt.MemoryPoolType.WORKSPACE, 2 * GIB)
    # No layer of the parsed network is given a precision or an output type.
    network.get_layer.assert_not_called()


def test_create_config_has_no_precision_arguments():
    config = create_config(_profile("unet"), BuildOptions(precision="fp8", builder_optimization_level=4))
    assert isinstance(config, CreateConfig)
    assert not (config.fp16 or config.int8 or config.fp8 or config.bf16)
    assert config.precision_constraints is None and config.calibrator is None
    assert config.builder_optimization_level == 4 and config.timing_cache_path is None
    (profile,) = config.profiles
    assert profile["sample"].min == (1, 1, 8, 32, 32)
    assert profile["sample"].opt == (1, 14, 8, 72, 128)
    assert profile["sample"].max == (2, 25, 8, 128, 128)


def test_workspace_limit():
    config = create_config(_profile("unet"), BuildOptions(precision="fp16", workspace_gib=8))
    assert isinstance(config, PostprocessConfig) and isinstance(config._config, CreateConfig)
    assert isinstance(config._func, WorkspaceLimit) and config._func.nbytes == 8 * GIB
    assert create_config(_profile("unet"), BuildOptions(workspace_gib=0.5))._func.nbytes == GIB // 2


def test_timing_cache(tmp_path):
    cache = tmp_path / "timing.cache"
    options = BuildOptions(precision="fp16", timing_cache=cache)
    # Not there yet: nothing to load (an empty cache is created), but it is saved after the build.
    loader = engine_loader("u.onnx", _profile("unet"), options, save_timing_cache=tmp_path / "tmp.cache")
    assert loader._config.timing_cache_path is None
    assert loader.timing_cache_path == str(tmp_path / "tmp.cache")
    cache.write_bytes(b"cache")
    assert create_config(_profile("unet"), options).timing_cache_path == str(cache)


@pytest.mark.parametrize("version", ["8.6.1", "10.0.1", "10.11.0.33"])
def test_old_tensorrt_is_refused_naming_the_version_needed(version):
    with pytest.raises(BackendUnavailableError) as info:
        check_tensorrt_version(version)
    msg = str(info.value)
    assert version in msg and ">= 10.12" in msg and "tensorrt>=10.12,<12" in msg


@pytest.mark.parametrize("version", ["10.12.0.36", "10.13.3", "11.0.0", "11.4.0.5"])
def test_supported_tensorrt(version):
    check_tensorrt_version(version)


def test_unknown_precision():
    with pytest.raises(ValueError, match="fp32, fp16, int8, fp8"):
        BuildOptions(precision="bf16")
