"""The Polygraphy loader chain, assembled but not called (calling it needs TensorRT and a GPU)."""

from __future__ import annotations

import pytest

pytest.importorskip("polygraphy")

from polygraphy.backend.trt import (  # noqa: E402
    CreateConfig,
    EngineFromNetwork,
    NetworkFromOnnxPath,
    PostprocessConfig,
    PostprocessNetwork,
)

from export.specs import ModelConfig, build_specs  # noqa: E402
from export.trt_build import (  # noqa: E402
    GIB,
    BuildOptions,
    KeepLayersFp32,
    WorkspaceLimit,
    create_config,
    engine_loader,
    fp32_node_names,
    network_precision,
)
from export.trt_profiles import default_ranges, network_profile  # noqa: E402

SPECS = build_specs(ModelConfig())
NORMS = SPECS["vae_decoder"].fp32_op_types


def _profile(network):
    return network_profile(SPECS[network], ModelConfig(), default_ranges(ModelConfig()))


def test_precision_policy():
    fp16, vae32, fp32 = BuildOptions(fp16=True), BuildOptions(fp16=True, vae_fp32=True), BuildOptions()
    assert network_precision(SPECS["unet"], fp16) == ("fp16", ())
    assert network_precision(SPECS["image_encoder"], fp16) == ("fp16", ())
    for vae in ("vae_encoder", "vae_decoder"):
        precision, kept = network_precision(SPECS[vae], fp16)
        assert precision == "fp16" and "InstanceNormalization" in kept and "GroupNormalization" in kept
        assert network_precision(SPECS[vae], vae32) == ("fp32", ())
    for name in SPECS:
        assert network_precision(SPECS[name], fp32) == ("fp32", ())


def test_unet_fp16_chain():
    loader = engine_loader("b/unet.onnx", _profile("unet"), "fp16", [], (), BuildOptions(fp16=True, builder_optimization_level=4))
    assert isinstance(loader, EngineFromNetwork)
    assert isinstance(loader._network, NetworkFromOnnxPath) and loader._network.path == "b/unet.onnx"
    config = loader._config
    assert isinstance(config, CreateConfig)
    assert config.fp16 is True and config.tf32 is False and config.int8 is False
    assert config.precision_constraints is None  # nothing pinned to fp32 in the UNet
    assert config.builder_optimization_level == 4
    assert config.timing_cache_path is None and loader.timing_cache_path is None
    (profile,) = config.profiles
    assert profile["sample"].min == (1, 1, 8, 32, 32)
    assert profile["sample"].opt == (1, 14, 8, 72, 128)
    assert profile["sample"].max == (2, 25, 8, 128, 128)
    assert profile["added_time_ids"].max == (2, 3)


def test_vae_fp16_chain_keeps_norms_fp32():
    nodes = ["/decoder/up_blocks.0/resnets.0/norm1/InstanceNormalization"]
    loader = engine_loader("b/vae_decoder.onnx", _profile("vae_decoder"), "fp16", nodes, NORMS, BuildOptions(fp16=True))
    assert isinstance(loader._network, PostprocessNetwork)
    step = loader._network._func
    assert isinstance(step, KeepLayersFp32) and step.node_names == frozenset(nodes)
    assert step.layer_types == ("NORMALIZATION", "REDUCE", "SOFTMAX")
    assert loader._network._network.path == "b/vae_decoder.onnx"
    assert loader._config.fp16 is True and loader._config.precision_constraints == "obey"


def test_fp32_chain():
    loader = engine_loader("b/vae_encoder.onnx", _profile("vae_encoder"), "fp32", [], (), BuildOptions())
    assert isinstance(loader._network, NetworkFromOnnxPath)
    assert loader._config.fp16 is False and loader._config.precision_constraints is None
    assert loader._config.builder_optimization_level is None  # TensorRT's default


def test_workspace_limit():
    config = create_config(_profile("unet"), "fp16", False, BuildOptions(fp16=True, workspace_gib=8))
    assert isinstance(config, PostprocessConfig) and isinstance(config._config, CreateConfig)
    assert isinstance(config._func, WorkspaceLimit) and config._func.nbytes == 8 * GIB
    assert create_config(_profile("unet"), "fp16", False, BuildOptions(workspace_gib=0.5))._func.nbytes == GIB // 2


def test_timing_cache(tmp_path):
    cache = tmp_path / "timing.cache"
    options = BuildOptions(fp16=True, timing_cache=cache)
    # Not there yet: nothing to load (an empty cache is created), but it is saved after the build.
    loader = engine_loader("u.onnx", _profile("unet"), "fp16", [], (), options, save_timing_cache=tmp_path / "tmp.cache")
    assert loader._config.timing_cache_path is None
    assert loader.timing_cache_path == str(tmp_path / "tmp.cache")
    cache.write_bytes(b"cache")
    assert create_config(_profile("unet"), "fp16", False, options).timing_cache_path == str(cache)


def test_layer_matching():
    keep = KeepLayersFp32(["/dec/norm1/InstanceNormalization", "/dec/Pow"], NORMS)
    assert keep.matches("/dec/norm1/InstanceNormalization", "CONVOLUTION")  # by ONNX node name
    assert keep.matches("/dec/norm1/InstanceNormalization_1", "SHUFFLE")  # a helper layer of that node
    assert keep.matches("/dec/Pow", "ELEMENTWISE")
    assert keep.matches("/other/GroupNorm", "NORMALIZATION")  # by layer type
    assert keep.matches("/dec/Pow_12", "ELEMENTWISE")
    assert not keep.matches("/dec/Power", "ELEMENTWISE")  # a prefix is not enough
    assert not keep.matches("/dec/Pow_x", "ELEMENTWISE")
    assert not keep.matches("/dec/conv1/Conv", "CONVOLUTION")


def test_fp32_node_names_from_the_tiny_vae(tiny_bundle):
    names = fp32_node_names(tiny_bundle / "vae_decoder.onnx", NORMS)
    import onnx

    graph = onnx.load(str(tiny_bundle / "vae_decoder.onnx"), load_external_data=False).graph
    expected = [n.name for n in graph.node if n.op_type in NORMS]
    assert names == expected and len(names) > 10
    assert all("norm" in n.lower() for n in names if n.endswith("Normalization"))
    assert fp32_node_names(tiny_bundle / "unet.onnx", ()) == []
