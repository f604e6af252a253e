"""The OpenVINO engine on the tiny bundle: f32 equals ONNX Runtime (per network and on pipeline
frames), bf16 stays close, the compiled-model cache is used, and user errors are one clear line.

Skipped with the install command where OpenVINO is not installed (the error tests still run).
"""

from __future__ import annotations

import sys

import numpy as np
import PIL.Image
import pytest

from benchmarks.openvino import psnr, relative_error
from benchmarks.workload import build_calls
from engines.factory import create_engines, pipeline_engines
from export.bundle import Bundle
from export.errors import BackendUnavailableError, ToolkitError
from export.specs import NETWORKS
from runtime.pipeline import VideoPipeline

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: pip install -e .[openvino]")

CALLS = ("image_encoder", "vae_encoder", "unet_b2", "unet_b1", "vae_decoder")
FRAMES, HEIGHT, WIDTH = 3, 48, 64
GUIDED = dict(steps=25, min_guidance=1.0, max_guidance=3.0)
ONE_STEP = dict(steps=1, min_guidance=1.0, max_guidance=1.0)


def _has_bf16() -> bool:
    from engines.openvino_engine import device_capabilities, import_openvino

    return "BF16" in device_capabilities(import_openvino().Core())


@pytest.fixture(scope="module")
def image():
    y, x = np.mgrid[0:40, 0:56]
    rgb = np.stack([x * 4.5, y * 6.0, 128 + 60 * np.sin(x / 5.0 + y / 7.0)], -1)
    return PIL.Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def calls(tiny_bundle):
    config = Bundle.load(tiny_bundle).config
    return {call: (network, {k: np.asarray(v) for k, v in inputs.items()})
            for call, (network, inputs) in build_calls(config, FRAMES, HEIGHT, WIDTH).items()}


@pytest.fixture(scope="module")
def ort_engines(tiny_bundle):
    return pipeline_engines(tiny_bundle, "onnxruntime", threads=1)


@pytest.fixture(scope="module")
def ov_engines(tiny_bundle):
    return pipeline_engines(tiny_bundle, "openvino", threads=1)


@pytest.fixture(scope="module")
def bf16_engines(tiny_bundle):
    if not _has_bf16():
        pytest.skip("this CPU has no BF16 (AVX-512 BF16 or AMX)")
    return pipeline_engines(tiny_bundle, "openvino", threads=1, precision="bf16")


def _clip(engines, image, **kw):
    # No ``with``: leaving it would release the engines, and the next test would compile them again.
    pipe = VideoPipeline(engines)
    return pipe(image, num_frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0, progress=False, **kw).frames


# --------------------------------------------------------------------------- numerics


@needs_openvino
@pytest.mark.parametrize("call", CALLS)
def test_f32_matches_onnxruntime(ort_engines, ov_engines, calls, call):
    network, inputs = calls[call]
    engine = getattr(ov_engines, network)
    assert engine.backend == "openvino"
    want = getattr(ort_engines, network).run(inputs)
    got = engine.run(inputs)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.dtype == np.float32 and value.shape == want[name].shape
        np.testing.assert_allclose(value, want[name], rtol=0, atol=engine.spec.atol, err_msg=f"{call}.{name}")


@needs_openvino
@pytest.mark.parametrize("kw", [GUIDED, ONE_STEP], ids=["svd-25", "sfv-1"])
def test_f32_frames_equal_onnxruntime(ort_engines, ov_engines, image, kw):
    want = _clip(ort_engines, image, **kw)
    got = _clip(ov_engines, image, **kw)
    assert np.abs(got.astype(int) - want).max() <= 1


@needs_openvino
@pytest.mark.parametrize("kw", [GUIDED, ONE_STEP], ids=["svd-25", "sfv-1"])
def test_bf16_frames_close_to_f32(ov_engines, bf16_engines, image, kw):
    want = _clip(ov_engines, image, **kw)
    got = _clip(bf16_engines, image, **kw)
    assert 30 <= psnr(got, want) < float("inf")  # close, and really computed in bf16 (not equal)


@needs_openvino
def test_bf16_differs_from_f32_per_call(ov_engines, bf16_engines, calls):
    """The precision option reaches the device: bf16 outputs differ from f32 at bf16's resolution."""
    _, inputs = calls["unet_b1"]
    err = relative_error(bf16_engines.unet.run(inputs)["noise_pred"], ov_engines.unet.run(inputs)["noise_pred"])
    assert 1e-4 < err < 0.05


@needs_openvino
def test_compiled_model_cache(tiny_bundle, calls, tmp_path):
    import openvino.properties as props

    network, inputs = calls["vae_decoder"]
    cache = tmp_path / "ov-cache"
    first = create_engines(tiny_bundle, "openvino", networks=[network], threads=1, ov_cache_dir=cache)[network]
    want = first.run(inputs)["sample"]
    assert not first.compiled.get_property(props.loaded_from_cache)
    assert any(cache.iterdir())
    second = create_engines(tiny_bundle, "openvino", networks=[network], threads=1, ov_cache_dir=cache)[network]
    np.testing.assert_array_equal(second.run(inputs)["sample"], want)
    assert second.compiled.get_property(props.loaded_from_cache)


@needs_openvino
def test_lifecycle(tiny_bundle, calls):
    every = create_engines(tiny_bundle, "openvino")
    assert every["clip_preprocess"].backend == "onnxruntime"  # the tiny pre-processing graph, as for every backend
    assert all(every[n].backend == "openvino" for n in NETWORKS)
    network, inputs = calls["vae_encoder"]
    with create_engines(tiny_bundle, "openvino", networks=[network])[network] as engine:
        assert engine.active and engine.backend == "openvino"
        engine.run(inputs)
    assert not engine.active and engine.compiled is None
    assert "latent" in engine.run(inputs)  # reloads on demand


# --------------------------------------------------------------------------- errors


def test_missing_openvino_names_the_install(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install -e \.\[openvino\]"):
        create_engines(tiny_bundle, "openvino")


def test_unknown_precision_is_refused(tiny_bundle):
    from engines.openvino_engine import OpenVINOEngine

    with pytest.raises(ToolkitError, match="unknown precision 'fp9'.*bf16"):
        create_engines(tiny_bundle, "openvino", precision="fp9")
    with pytest.raises(ToolkitError, match="bf16 is OpenVINO's inference precision; use --backend openvino"):
        create_engines(tiny_bundle, "onnxruntime", precision="bf16")
    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(ToolkitError, match="'int4'"):
        OpenVINOEngine(bundle.spec("unet"), bundle.path("unet"), inference_precision="int4")


@needs_openvino
def test_bf16_refused_on_a_cpu_without_it(tiny_bundle, calls, monkeypatch):
    import engines.openvino_engine as ove

    real = ove.device_capabilities(ove.import_openvino().Core())
    assert "FP32" in real  # the real query answers in the names the check looks for
    monkeypatch.setattr(ove, "device_capabilities", lambda core, device="CPU": ["FP32", "INT8", "BIN"])
    with pytest.raises(BackendUnavailableError, match="bf16 needs a CPU with BF16.*offers FP32, INT8, BIN.*f32"):
        create_engines(tiny_bundle, "openvino", precision="bf16")
    # An engine made directly checks at activation.
    network, inputs = calls["image_encoder"]
    bundle = Bundle.load(tiny_bundle)
    engine = ove.OpenVINOEngine(bundle.spec(network), bundle.path(network), inference_precision="bf16")
    with pytest.raises(BackendUnavailableError, match="BF16"):
        engine.run(inputs)
    create_engines(tiny_bundle, "openvino")  # f32 needs nothing special


@needs_openvino
def test_cli_backend_openvino(tiny_bundle, image, tmp_path, capsys):
    from runtime.generate import main

    image.save(tmp_path / "in.png")
    common = ["--bundle", str(tiny_bundle), "--image", str(tmp_path / "in.png"), "--frames", str(FRAMES), "--height",
              str(HEIGHT), "--width", str(WIDTH), "--steps", "1", "--max-guidance", "1", "--quiet"]
    cache = tmp_path / "ov-cache"
    assert main(common + ["--out", str(tmp_path / "ov.npy"), "--backend", "openvino", "--ov-cache", str(cache)]) == 0
    assert main(common + ["--out", str(tmp_path / "ort.npy")]) == 0
    got, want = np.load(tmp_path / "ov.npy"), np.load(tmp_path / "ort.npy")
    assert got.shape == (FRAMES, HEIGHT, WIDTH, 3) and np.abs(got.astype(int) - want).max() <= 1
    assert any(cache.iterdir())
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "x.npy"), "--precision", "bf16"]) == 2
    assert "bf16 is OpenVINO's inference precision; use --backend openvino" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "x.npy"), "--ov-cache", str(cache)]) == 2
    assert "--ov-cache goes with --backend openvino" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()
