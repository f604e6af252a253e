"""The OpenVINO engine on the tiny bundle: f32 equals ONNX Runtime (per network and on pipeline
frames, at 3, 8 and the model's 14 frames), the compiled model really runs the inference precision
asked for, bf16 stays close, the compiled-model cache is used, and user errors are one clear line.
On an AVX2-only CPU (emulated with ``-m avx2emu``) f32 still equals ONNX Runtime at 14 frames.

Skipped with the install command where OpenVINO is not installed (the error tests still run).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from benchmarks.openvino import psnr, relative_error
from benchmarks.workload import build_calls
from engines.factory import create_engines, pipeline_engines
from contract.bundle import Bundle
from contract.errors import BackendUnavailableError, ToolkitError
from contract.specs import NETWORKS
from runtime.pipeline import VideoPipeline

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: pip install -e .[openvino]")

CALLS = ("image_encoder", "vae_encoder", "unet_b2", "unet_b1", "vae_decoder")
FRAMES, HEIGHT, WIDTH = 3, 48, 64
# 14 is the model's default (``num_frames``); temporal attention over 8 frames or more is where
# OpenVINO's AVX2 kernels went wrong (docs/openvino.md), so f32 is checked on both sides of it.
FRAME_COUNTS = (FRAMES, 8, 14)
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
def calls_at(tiny_bundle):
    """``calls_at(frames)``: ``{call: (network, inputs)}`` of one clip with that many frames."""
    config = Bundle.load(tiny_bundle).config
    assert config.num_frames == FRAME_COUNTS[-1]  # the default frame count is among those checked

    @cache
    def calls_at(frames):
        return {call: (network, {k: np.asarray(v) for k, v in inputs.items()})
                for call, (network, inputs) in build_calls(config, frames, HEIGHT, WIDTH).items()}

    return calls_at


@pytest.fixture(scope="module")
def calls(calls_at):
    return calls_at(FRAMES)


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


def _clip(engines, image, frames=FRAMES, **kw):
    # No ``with``: leaving it would release the engines, and the next test would compile them again.
    pipe = VideoPipeline(engines)
    return pipe(image, num_frames=frames, height=HEIGHT, width=WIDTH, seed=0, progress=False, **kw).frames


# --------------------------------------------------------------------------- numerics


@needs_openvino
@pytest.mark.parametrize("frames", FRAME_COUNTS)
@pytest.mark.parametrize("call", CALLS)
def test_f32_matches_onnxruntime(ort_engines, ov_engines, calls_at, call, frames):
    network, inputs = calls_at(frames)[call]
    engine = getattr(ov_engines, network)
    assert engine.backend == "openvino"
    want = getattr(ort_engines, network).run(inputs)
    got = engine.run(inputs)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.dtype == np.float32 and value.shape == want[name].shape
        np.testing.assert_allclose(value, want[name], rtol=0, atol=engine.spec.atol, err_msg=f"{call}.{name}")


@needs_openvino
@pytest.mark.parametrize("frames", FRAME_COUNTS)
@pytest.mark.parametrize("kw", [GUIDED, ONE_STEP], ids=["svd-25", "sfv-1"])
def test_f32_frames_equal_onnxruntime(ort_engines, ov_engines, image, kw, frames):
    want = _clip(ort_engines, image, frames, **kw)
    got = _clip(ov_engines, image, frames, **kw)
    assert got.shape == (frames, HEIGHT, WIDTH, 3) and np.abs(got.astype(int) - want).max() <= 1


@needs_openvino
def test_compiled_models_run_the_inference_precision_asked_for(ov_engines, tiny_bundle, calls):
    """The f32 hint reaches the device: the compiled models report it (OpenVINO's own choice is
    bf16 on a CPU with AVX-512 BF16 or AMX), and so does bf16 where it is asked for."""
    import openvino
    import openvino.properties.hint as hints

    for network in NETWORKS:
        engine = getattr(ov_engines, network)
        engine.activate()
        assert engine.compiled.get_property(hints.inference_precision) == openvino.Type.f32, network
    if _has_bf16():
        network, inputs = calls["vae_encoder"]
        engine = create_engines(tiny_bundle, "openvino", networks=[network], precision="bf16", threads=1)[network]
        engine.run(inputs)
        assert engine.compiled.get_property(hints.inference_precision) == openvino.Type.bf16


@needs_openvino
def test_avx2_workarounds_only_without_avx512(tiny_bundle, calls, ort_engines, monkeypatch):
    """Without AVX-512 the compile properties carry the AVX2 workarounds (and OpenVINO accepts
    them: the engine compiles and still equals ONNX Runtime); with AVX-512 they stay out."""
    import engines.openvino_engine as ove

    assert ove.cpu_workarounds(avx512=True) == {}
    assert ove.cpu_workarounds(avx512=False) == ove.AVX2_WORKAROUNDS != {}
    monkeypatch.setattr(ove, "cpu_has_avx512", lambda: True)
    network, inputs = calls["unet_b1"]
    bundle = Bundle.load(tiny_bundle)
    engine = ove.OpenVINOEngine(bundle.spec(network), bundle.path(network), threads=1)
    assert not set(ove.AVX2_WORKAROUNDS) & set(engine.compile_config())
    monkeypatch.setattr(ove, "cpu_has_avx512", lambda: False)
    assert ove.AVX2_WORKAROUNDS.items() <= engine.compile_config().items()
    got, want = engine.run(inputs)["noise_pred"], ort_engines.unet.run(inputs)["noise_pred"]
    np.testing.assert_allclose(got, want, rtol=0, atol=engine.spec.atol)


@needs_openvino
@pytest.mark.avx2emu
def test_avx2_f32_matches_onnxruntime(tiny_bundle):
    """On an AVX2-only CPU (AVX-512 hidden by qemu where the host has it) OpenVINO f32 keeps the
    README's promise at the model's 14 frames: the UNet equals ONNX Runtime's to float rounding
    (also imported from the compiled-model cache) and SF-V frames are within one uint8 level.
    Without the workaround this UNet was 0.25 (relative) off at 8 and 14 frames."""
    from avx2_emulation import run_as_avx2

    script = Path(__file__).with_name("openvino_avx2_check.py")
    proc = run_as_avx2([str(script), "--bundle", str(tiny_bundle), "--frames", "8", "14", "--clip-frames", "14",
                        "--height", str(HEIGHT), "--width", str(WIDTH)])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["avx512"] is False and result["workarounds"], result  # the child really took the AVX2 path
    assert set(result["unet"]) == {"8", "14"}
    for frames, err in [*result["unet"].items(), *result["unet_cached"].items()]:
        assert err < 1e-4, (frames, result)
    assert result["loaded_from_cache"], result
    assert result["clip"]["shape"] == [14, HEIGHT, WIDTH, 3] and result["clip"]["max_level_difference"] <= 1, result


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
    with pytest.raises(BackendUnavailableError, match="bf16 needs a CPU with BF16.*offers FP32, INT8, BIN.*f32") as err:
        create_engines(tiny_bundle, "openvino", precision="bf16")
    # The fix it names is an option that exists: the CLI's --precision (fp32, its default).
    assert "--precision fp32" in str(err.value) and "--ov-precision" not in str(err.value)
    from runtime.generate import build_parser

    assert build_parser().parse_args(["--bundle", "b", "--image", "i", "--out", "o", "--precision", "fp32"]).precision == "fp32"
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
