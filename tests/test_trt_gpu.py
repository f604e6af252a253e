"""TensorRT on a GPU: tiny engines built, run and compared with ONNX Runtime.

Selected with ``pytest -m gpu``; skipped unless ``import tensorrt`` works and PyTorch sees a CUDA
GPU. Tolerances (max abs difference against ONNX Runtime's CPU provider on the same graph):

- fp32 engines: 1e-3 per network and on the pipeline's final latents;
- fp16 engines: each network's ``NetworkSpec.atol_fp16`` (5e-2 CLIP / VAE encoder, 1e-1 UNet /
  decoder), and 5% of the latents' largest magnitude for the whole pipeline (one step).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

trt = pytest.importorskip("tensorrt")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to PyTorch", allow_module_level=True)

from engines.tensorrt_engine import TensorRTEngine  # noqa: E402
from contract.bundle import Bundle  # noqa: E402
from contract.errors import EngineCacheError, ShapeError  # noqa: E402
from contract.specs import expand_dims  # noqa: E402
from export.trt import main  # noqa: E402

# Inside the tiny model's default profile (32..64 px, frames 1..25, UNet batch 1..2).
DIMS = {"batch": 1, "frames": 14, "height": 64, "width": 64}
NETS = ("image_encoder", "vae_encoder", "unet", "vae_decoder")


def _build(tiny_bundle, root, *flags):
    if not root.exists():
        shutil.copytree(tiny_bundle, root)
    assert main(["--bundle", str(root), *flags]) == 0
    return Bundle.load(root)


@pytest.fixture(scope="module")
def fp32_bundle(tiny_bundle, tmp_path_factory):
    return _build(tiny_bundle, tmp_path_factory.mktemp("trt32") / "b", "--timing-cache", str(tmp_path_factory.getbasetemp() / "t.cache"))


@pytest.fixture(scope="module")
def fp16_bundle(tiny_bundle, tmp_path_factory):
    return _build(tiny_bundle, tmp_path_factory.mktemp("trt16") / "b", "--fp16")


def _ort(bundle, network, inputs, onnx_file):
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.root / onnx_file), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, inputs)
    return np.asarray(out, dtype=np.float32)


def _parity(bundle, network, atol, cuda_graph=False):
    """The engine against ONNX Runtime running the same graph variant it was built from."""
    spec = bundle.spec(network)
    entry = bundle.manifest["engines"][network]
    inputs = {k: np.asarray(v, dtype=np.float32) for k, v in spec.sample_inputs(expand_dims(DIMS, bundle.config), bundle.config).items()}
    want = _ort(bundle, network, inputs, entry["onnx_file"])
    with TensorRTEngine(spec, bundle.root / entry["file"], entry["precision"], cuda_graph=cuda_graph) as engine:
        got = engine.run(inputs)[spec.output_names[0]]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32  # contract: numpy out
        again = engine.run(inputs)[spec.output_names[0]]
        assert np.array_equal(got, again)
    err = float(np.abs(got - want).max())
    assert err <= atol, f"{network}: max abs {err:.3g} > {atol}"
    return err


@pytest.mark.parametrize("network", NETS)
def test_fp32_engines_match_onnxruntime(fp32_bundle, network):
    _parity(fp32_bundle, network, 1e-3)


@pytest.mark.parametrize("network", NETS)
def test_fp16_engines_match_onnxruntime(fp16_bundle, network):
    entry = fp16_bundle.manifest["engines"][network]
    assert entry["precision"] == "fp16" and entry["file"] == f"{network}.fp16.plan"
    assert entry["onnx_file"] == f"{network}.fp16.onnx"  # built from the fp16 graph, strongly typed
    _parity(fp16_bundle, network, fp16_bundle.spec(network).atol_fp16)


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory):
    return _build(tiny_bundle, tmp_path_factory.mktemp("trt8") / "b", "--int8")


def test_int8_unet_engine(int8_bundle):
    entry = int8_bundle.manifest["engines"]["unet"]
    assert entry["precision"] == "int8" and entry["onnx_file"] == "unet.int8.onnx"
    assert int8_bundle.manifest["engines"]["vae_decoder"]["precision"] == "fp16"  # no int8 decoder graph
    # TensorRT's int8 kernels against ONNX Runtime's on the same Q/DQ graph: same scales, other rounding.
    _parity(int8_bundle, "unet", 0.1)


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9), reason="fp8 needs Ada/Hopper or newer")
def test_fp8_unet_engine(tiny_bundle, tmp_path):
    bundle = _build(tiny_bundle, tmp_path / "b", "--fp8", "--networks", "unet")
    entry = bundle.manifest["engines"]["unet"]
    assert entry["precision"] == "fp8" and entry["onnx_file"] == "unet.fp8.onnx"
    _parity(bundle, "unet", 0.2)


def test_cuda_graph_matches(fp32_bundle):
    _parity(fp32_bundle, "unet", 1e-3, cuda_graph=True)


def test_second_run_reuses_engines(fp32_bundle, tiny_bundle, capsys):
    capsys.readouterr()
    mtimes = {p.name: p.stat().st_mtime_ns for p in fp32_bundle.root.glob("*.plan")}
    assert len(mtimes) == 4
    _build(tiny_bundle, fp32_bundle.root)
    out = capsys.readouterr().out
    assert out.count(": reused ") == 4 and "built" not in out
    assert {p.name: p.stat().st_mtime_ns for p in fp32_bundle.root.glob("*.plan")} == mtimes


def test_out_of_profile(fp32_bundle):
    spec = fp32_bundle.spec("unet")
    plan = fp32_bundle.root / fp32_bundle.manifest["engines"]["unet"]["file"]
    too_long = spec.sample_inputs(expand_dims({**DIMS, "frames": 26}, fp32_bundle.config), fp32_bundle.config)
    with pytest.raises(ShapeError, match="outside the TensorRT engine's profile"):
        TensorRTEngine(spec, plan).run(too_long)
    # Without a recorded key the profile is read from the engine itself.
    with pytest.raises(ShapeError, match="outside the TensorRT engine's profile"):
        TensorRTEngine(spec, plan, cache_key={}).run(too_long)


def test_mismatched_gpu_is_refused(fp32_bundle):
    entry = fp32_bundle.manifest["engines"]["unet"]
    key = {**entry["cache_key"], "gpu_name": "Some Other GPU", "compute_capability": "7.5"}
    engine = TensorRTEngine(fp32_bundle.spec("unet"), fp32_bundle.root / entry["file"], cache_key=key)
    with pytest.raises(EngineCacheError, match="another machine"):
        engine.activate()


def _pipeline_latents(root, backend):
    from runtime.pipeline import VideoPipeline

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with VideoPipeline.from_bundle(root, backend=backend) as pipe:
        result = pipe(image, steps=1, min_guidance=1.0, max_guidance=1.0, seed=0, progress=False)
    return result.latents, result.frames


def test_pipeline_fp32_matches_onnxruntime(fp32_bundle):
    want, want_frames = _pipeline_latents(fp32_bundle.root, "onnxruntime")
    got, frames = _pipeline_latents(fp32_bundle.root, "tensorrt")
    assert got.shape == want.shape and frames.shape == want_frames.shape
    assert float(np.abs(np.asarray(got) - np.asarray(want)).max()) <= 1e-3


def test_pipeline_fp16_matches_onnxruntime(fp16_bundle):
    want, _ = _pipeline_latents(fp16_bundle.root, "onnxruntime")
    got, _ = _pipeline_latents(fp16_bundle.root, "tensorrt")
    got, want = np.asarray(got), np.asarray(want)
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_manifest_records(fp16_bundle):
    manifest = json.loads((fp16_bundle.root / "manifest.json").read_text())
    for network in NETS:
        entry = manifest["engines"][network]
        key = entry["cache_key"]
        assert key["tensorrt_version"] == trt.__version__
        assert key["gpu_name"] == torch.cuda.get_device_name()
        assert key["onnx_sha256"] == manifest["networks"][network]["variants"]["fp16"]["sha256"]
        assert (fp16_bundle.root / entry["file"]).is_file()


def test_model_is_exported_then_built(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["--model", "tiny", "--out", str(out), "--fp16", "--networks", "image_encoder"]) == 0
    bundle = Bundle.load(out)
    assert bundle.networks == ["image_encoder"]
    assert bundle.manifest["engines"]["image_encoder"]["file"] == "image_encoder.fp16.plan"
    assert "image_encoder: built" in capsys.readouterr().out
