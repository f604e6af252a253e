"""TensorRTEngine parts that run before the GPU is touched: profile checks, key lookup, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from engines.tensorrt_engine import TensorRTEngine
from contract.atomic import write_json_atomic
from contract.errors import BackendUnavailableError, BundleError, ShapeError
from contract.specs import ModelConfig, build_specs
from engines.trt_cache import MachineInfo, cache_key, missing_requirements
from contract.trt_profiles import default_ranges, network_profile

TINY = ModelConfig(vae_scale_factor=8, unet_downsample=2, embed_dim=32, default_height=64, default_width=64)
SPEC = build_specs(TINY)["unet"]
PROFILE = network_profile(SPEC, TINY, default_ranges(TINY))  # frames 1..25, 32..64 px, batch 1..2
KEY = cache_key("00" * 32, MachineInfo("11.4.0", "NVIDIA H100 80GB HBM3", "9.0"), "fp16", PROFILE)


def _inputs(batch=1, frames=14, height=64, width=64):
    return SPEC.sample_inputs({"batch": batch, "frames": frames, "latent_height": height // 8, "latent_width": width // 8}, TINY)


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "unet.fp16.plan"
    path.write_bytes(b"not loaded by these tests")
    return path


@pytest.mark.parametrize(
    "dims, axis",
    [
        (dict(frames=26), "[1, 26, 8, 8, 8]"),  # more frames than the profile's 25
        (dict(batch=3), "[3, 14, 8, 8, 8]"),  # beyond the CFG-doubled batch 2
        (dict(height=80), "[1, 14, 8, 10, 8]"),  # 80 px > 64 px
        (dict(width=16), "[1, 14, 8, 8, 2]"),  # 16 px < 32 px
    ],
)
def test_out_of_profile_raises_before_loading(plan, dims, axis):
    engine = TensorRTEngine(SPEC, plan, precision="fp16", cache_key=KEY)
    with pytest.raises(ShapeError) as info:
        engine.run(_inputs(**dims))
    msg = str(info.value)
    assert "outside the TensorRT engine's profile" in msg and axis in msg
    assert "python -m export.trt" in msg and "--networks unet" in msg
    assert not engine.active  # nothing was loaded


def test_spec_errors_come_first(plan):
    engine = TensorRTEngine(SPEC, plan, cache_key=KEY)
    bad = _inputs()
    bad["sample"] = bad["sample"][:, :, :4]  # 4 channels instead of 8
    with pytest.raises(ShapeError, match="axis 2 is 4, expected 8"):
        engine.run(bad)


@pytest.mark.skipif(not missing_requirements(), reason="TensorRT and a GPU are available here")
def test_in_profile_needs_tensorrt(plan):
    engine = TensorRTEngine(SPEC, plan, precision="fp16", cache_key=KEY)
    with pytest.raises(BackendUnavailableError) as info:
        engine.run(_inputs(frames=25))
    assert "running a TensorRT engine" in str(info.value) and "pip install '.[gpu]'" in str(info.value)
    assert not engine.active


def test_key_and_profile_from_the_manifest_beside_the_plan(plan):
    write_json_atomic(plan.parent / "manifest.json", {"engines": {"unet": {"file": plan.name, "cache_key": KEY}}})
    engine = TensorRTEngine(SPEC, plan, precision="fp16")
    assert engine.cache_key == KEY and engine.profile == PROFILE
    with pytest.raises(ShapeError):
        engine.run(_inputs(frames=30))
    other = plan.parent / "unet.fp32.plan"
    assert TensorRTEngine(SPEC, other).cache_key is None  # not recorded: read from the engine on load


def test_from_bundle_needs_a_recorded_engine(tmp_path):
    from contract.bundle import Bundle, new_manifest

    Bundle(root=tmp_path, manifest=new_manifest("tiny", "tiny", TINY, {})).save()
    with pytest.raises(BundleError, match="python -m export.trt --bundle"):
        TensorRTEngine.from_bundle(Bundle.load(tmp_path), "unet")


def test_repr_and_backend(plan):
    engine = TensorRTEngine(SPEC, plan, precision="fp16", cache_key=KEY, cuda_graph=True)
    assert engine.backend == "tensorrt" and engine.cuda_graph and repr(engine) == "TensorRTEngine(unet, fp16)"
    assert isinstance(_inputs()["sample"], np.ndarray)  # engines take numpy


def test_runtime_loads_the_plan_of_the_requested_precision(tmp_path):
    """``--backend tensorrt --precision int8`` never runs the fp16 plan built earlier: the plan must be
    the one ``export.trt`` builds for that request; with no precision the engines run as built."""
    from engines.factory import _plan
    from contract.bundle import Bundle, new_manifest

    manifest = new_manifest("tiny", "tiny", TINY, {})
    fp32 = {"file": "unet.onnx", "external_data": None, "sha256": "00", "bytes": 1, "nodes": 1, "fp32_ops": [], "validation": []}
    variants = {"fp32": fp32, "fp16": {**fp32, "file": "unet.fp16.onnx"}, "int8": {**fp32, "file": "unet.int8.onnx"}}
    manifest["networks"]["unet"] = {**SPEC.to_json(), "variants": variants}
    manifest["engines"] = {"unet": {"file": "unet.fp16.plan", "precision": "fp16"}}
    (tmp_path / "unet.fp16.plan").write_bytes(b"plan")
    Bundle(root=tmp_path, manifest=manifest).save()
    bundle = Bundle.load(tmp_path)
    assert _plan(bundle, "unet")[1]["precision"] == "fp16"  # as built
    assert _plan(bundle, "unet", "fp16")[0].name == "unet.fp16.plan"
    with pytest.raises(BundleError, match=r"built for fp16, not int8 .*export.trt --bundle .* --int8"):
        _plan(bundle, "unet", "int8")
    with pytest.raises(BundleError, match="built for fp16, not fp32"):
        _plan(bundle, "unet", "fp32")
    del bundle.manifest["networks"]["unet"]["variants"]["int8"]  # no int8 graph: export.trt --int8 builds fp16 here
    assert _plan(bundle, "unet", "int8")[1]["precision"] == "fp16"
