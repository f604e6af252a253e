"""Engines: the torch reference and ONNX Runtime agree per network; inputs are checked once;
the factory builds every backend from the manifest and names the fix when it cannot."""

from __future__ import annotations

import json
import shutil
import types
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from engines.factory import BACKENDS, _plan, create_engines, tensorrt_engine_class, torch_engines
from engines.ort_engine import OnnxRuntimeEngine, resolve_providers
from engines.torch_engine import TorchEngine
from contract.bundle import Bundle
from contract.errors import BackendUnavailableError, BundleError, ShapeError
from contract.specs import NETWORKS, expand_dims

DIMS = [{"batch": 1, "frames": 3, "height": 64, "width": 64}, {"batch": 2, "frames": 5, "height": 48, "width": 64}]


@pytest.fixture(scope="module")
def ort_engines(tiny_bundle):
    engines = create_engines(tiny_bundle, "onnxruntime", threads=1)
    yield engines
    for e in engines.values():
        e.deactivate()


@pytest.fixture(scope="module")
def torch_refs(tiny_model):
    engines, _ = torch_engines(tiny_model)
    return engines


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("dims", DIMS, ids=["3f-64x64", "5f-48x64-b2"])
def test_onnxruntime_matches_torch(ort_engines, torch_refs, tiny_model, network, dims):
    dims = expand_dims(dict(dims), tiny_model.config)
    if network == "vae_decoder":
        dims["frames"] = dims["frames"] * dims["batch"]  # the decoder's axis 0 is a chunk of frames
    inputs = ort_engines[network].spec.sample_inputs(dims, tiny_model.config, seed=1)
    ours = ort_engines[network].run(inputs)
    ref = torch_refs[network].run(inputs)
    assert list(ours) == ort_engines[network].spec.output_names == list(ref)
    for name in ref:
        assert ours[name].dtype == np.float32 and ours[name].shape == ref[name].shape
        assert np.abs(ours[name] - ref[name]).max() < ort_engines[network].spec.atol


def test_torch_engine_is_the_exported_module(tiny_model):
    from networks.wrappers import build_network

    engines, config = torch_engines(tiny_model, networks=["image_encoder"])
    assert list(engines) == ["image_encoder"] and config == tiny_model.config
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with engines["image_encoder"] as engine:
        assert engine.active
        out = engine(pixel_values=x)["image_embeds"]
    assert not engine.active and engine.module is None
    with torch.no_grad():
        assert np.array_equal(out, build_network("image_encoder", tiny_model)(torch.from_numpy(x)).numpy())


def test_inputs_checked_before_running(ort_engines, tiny_model):
    engine = ort_engines["unet"]
    calls = engine.calls
    good = engine.spec.sample_inputs({"batch": 1, "frames": 2, "latent_height": 4, "latent_width": 4}, tiny_model.config)
    with pytest.raises(ShapeError, match="missing"):
        engine.run({k: v for k, v in good.items() if k != "timestep"})
    with pytest.raises(ShapeError, match="dtype"):
        engine.run({**good, "timestep": good["timestep"].astype(np.int64)})
    with pytest.raises(ShapeError, match="axis 2"):
        engine.run({**good, "sample": np.zeros((1, 2, 4, 4, 4), np.float32)})
    with pytest.raises(ShapeError, match="batch"):
        engine.run({**good, "added_time_ids": np.zeros((2, 3), np.float32)})
    with pytest.raises(ShapeError, match="numpy array"):
        engine.run({**good, "timestep": torch.zeros(1)})
    assert engine.calls == calls  # nothing ran


def test_onnxruntime_lifecycle_and_threads(tiny_bundle):
    bundle = Bundle.load(tiny_bundle)
    engine = OnnxRuntimeEngine(bundle.spec("image_encoder"), bundle.path("image_encoder"), threads=1)
    assert engine.session is None
    with engine:
        assert engine.session.get_providers() == ["CPUExecutionProvider"]
    assert engine.session is None and not engine.active


def test_resolve_providers():
    assert resolve_providers(None) == [("CPUExecutionProvider", {})]
    assert resolve_providers("cuda, cpu") == [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    assert resolve_providers([("tensorrt", {"trt_fp16_enable": True})]) == [("TensorrtExecutionProvider", {"trt_fp16_enable": True})]
    with pytest.raises(BackendUnavailableError):
        resolve_providers("")


def test_gpu_provider_not_installed(tiny_bundle, monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    engine = create_engines(tiny_bundle, "onnxruntime", networks=["image_encoder"], providers=["cuda"])["image_encoder"]
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        engine.activate()


def test_gpu_provider_listed_but_unusable(tiny_bundle, monkeypatch):
    """onnxruntime-gpu lists CUDA without a GPU and falls back to the CPU; that must not pass silently."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    engine = create_engines(tiny_bundle, "onnxruntime", networks=["image_encoder"], providers=["cuda"])["image_encoder"]
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with warnings.catch_warnings(), pytest.raises(BackendUnavailableError, match="could not initialise CUDAExecutionProvider"):
        warnings.simplefilter("ignore")  # ORT's own "not in available provider names" note
        engine.activate()


def test_factory_backends(tiny_bundle):
    ort = create_engines(tiny_bundle, "onnxruntime")
    assert list(ort) == ["clip_preprocess", *NETWORKS] and all(isinstance(e, OnnxRuntimeEngine) for e in ort.values())
    assert all(not e.active for e in ort.values())  # sessions load on activate
    torch_from_bundle = create_engines(tiny_bundle, "torch", networks=["vae_decoder", "unet"])
    assert list(torch_from_bundle) == ["unet", "vae_decoder"]
    assert all(isinstance(e, TorchEngine) for e in torch_from_bundle.values())
    assert torch_from_bundle["unet"].spec == Bundle.load(tiny_bundle).spec("unet")
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt", "openvino")
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        create_engines(tiny_bundle, "tvm")
    with pytest.raises(BackendUnavailableError, match="unknown precision"):
        create_engines(tiny_bundle, "onnxruntime", precision="int4")


def test_precision_falls_back_to_fp32_once(tiny_bundle, caplog):
    with caplog.at_level("WARNING"):
        engines = create_engines(tiny_bundle, "onnxruntime", precision="int8")
    assert all(e.precision == "fp32" for e in engines.values())
    assert caplog.text.count("no int8 graph") == 1 and "unet" in caplog.text


def test_tensorrt_unavailable_says_why(monkeypatch):
    """The factory says what is missing with the same check as export.trt (contract.environment)."""
    import importlib

    import contract.environment as environment

    real_import = importlib.import_module

    def without_tensorrt(name, *a):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'")
        return real_import(name, *a)

    monkeypatch.setattr(environment.importlib, "import_module", without_tensorrt)
    with pytest.raises(BackendUnavailableError, match="missing here: the tensorrt Python module"):
        tensorrt_engine_class()
    monkeypatch.setattr(environment.importlib, "import_module", lambda name, *a: types.SimpleNamespace(name=name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="needs TensorRT and an NVIDIA GPU; missing here: (an NVIDIA|a CUDA|a GPU)"):
        tensorrt_engine_class()


def test_tensorrt_plan_must_be_in_manifest(tiny_bundle):
    with pytest.raises(BundleError, match="no TensorRT engine for 'unet'.*export.trt"):
        _plan(Bundle.load(tiny_bundle), "unet")


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def test_changed_graph_fails_sha256(bundle_copy):
    with open(bundle_copy / "image_encoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        create_engines(bundle_copy, "onnxruntime")


def test_unloadable_graph_is_a_bundle_error(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    (bundle_copy / "vae_encoder.onnx").write_bytes(b"garbage")
    engine = OnnxRuntimeEngine(bundle.spec("vae_encoder"), bundle.path("vae_encoder"))
    with pytest.raises(BundleError, match="re-export"):
        engine.activate()


def test_missing_network_and_corrupt_manifest(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["networks"]["vae_decoder"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks vae_decoder"):
        create_engines(bundle_copy, "onnxruntime")
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        create_engines(bundle_copy, "onnxruntime")


def test_only_the_unet_sessions_threads_spin(tiny_bundle):
    """Idle ONNX Runtime threads spin only in the UNet's session (called back to back by the sampler);
    every other network's would spin on while the next network runs and take its cores."""
    from engines.factory import create_engines

    engines = create_engines(tiny_bundle, "onnxruntime", threads=2)
    for name, engine in engines.items():
        engine.activate()
        options = engine.session.get_session_options()
        if name == "unet":
            with pytest.raises(RuntimeError):  # not set: ONNX Runtime's default, spinning
                options.get_session_config_entry("session.intra_op.allow_spinning")
        else:
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0", name
    cpp = (Path(__file__).parents[1] / "runtime/cpp/src/session.cpp").read_text()
    assert 'if (network.name != "unet") so.AddConfigEntry("session.intra_op.allow_spinning", "0");' in cpp
