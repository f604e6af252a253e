"""Registered backends and per-network engines: ``create_engines(..., engines={...})``,
``VideoPipeline.from_bundle(engines=...)`` and ``runtime.generate --engines``, on the tiny bundle
with real ONNX Runtime and OpenVINO engines."""

from __future__ import annotations

import logging

import numpy as np
import PIL.Image
import pytest

from engines.factory import (
    BACKENDS,
    REGISTRY,
    Backend,
    Choice,
    create_engines,
    parse_engine_choices,
    register_backend,
)
from engines.ort_engine import OnnxRuntimeEngine
from contract.bundle import PRECISIONS
from contract.errors import BackendUnavailableError, UnknownNetworkError

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False

needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: pip install -e .[openvino]")


def _ov_bf16() -> str:
    """OpenVINO's bf16 where this CPU reports BF16, else f32 (never assumed)."""
    from engines.openvino_engine import device_capabilities, import_openvino

    return "bf16" if "BF16" in device_capabilities(import_openvino().Core()) else "fp32"


def _psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_backends_are_registered():
    assert BACKENDS == tuple(REGISTRY) == ("torch", "onnxruntime", "tensorrt", "openvino")
    assert REGISTRY["onnxruntime"].precisions == PRECISIONS
    assert "bf16" in REGISTRY["openvino"].precisions and "bf16" not in REGISTRY["onnxruntime"].precisions


def test_a_registered_backend_is_used_without_touching_the_factory(tiny_bundle, monkeypatch):
    """A new backend is one registration: here ONNX Runtime pinned to one thread under another name."""
    opened = []

    def open_pinned(bundle, names, precisions, options):
        opened.append((tuple(names), tuple(sorted(precisions))))
        return lambda name, variant, precision, threads: OnnxRuntimeEngine(bundle.spec(name), bundle.path(name, variant),
                                                                           precision=variant, threads=1)

    monkeypatch.setitem(REGISTRY, "ort-1thread", Backend("ort-1thread", ("fp32",), open_pinned))
    engines = create_engines(tiny_bundle, engines={"unet": "ort-1thread"})
    assert opened == [(("unet",), ("fp32",))]
    assert engines["unet"].threads == 1 and engines["vae_decoder"].threads is None
    with pytest.raises(BackendUnavailableError, match="ort-1thread runs fp32, not int8"):
        create_engines(tiny_bundle, engines={"unet": ("ort-1thread", "int8")})
    assert register_backend(REGISTRY["ort-1thread"]) is REGISTRY["ort-1thread"]


def test_parse_engine_choices():
    got = parse_engine_choices("unet=onnxruntime:int8, vae_decoder=openvino:bf16:2,image_encoder=openvino")
    assert got == {"unet": Choice("onnxruntime", "int8"), "vae_decoder": Choice("openvino", "bf16", 2),
                   "image_encoder": Choice("openvino")}
    assert str(got["vae_decoder"]) == "openvino:bf16:2" and str(got["image_encoder"]) == "openvino:fp32"
    assert Choice.of({"backend": "openvino", "precision": "bf16", "threads": None}) == Choice("openvino", "bf16")
    for bad in ("unet", "unet=", "=openvino", "unet=openvino:bf16:x", "unet=openvino:bf16:0", ""):
        with pytest.raises(BackendUnavailableError, match="engines|BACKEND|threads"):
            parse_engine_choices(bad)


def test_bad_choices_are_one_line_errors(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match="bf16 is OpenVINO's inference precision.*unet=openvino:bf16|use --backend openvino"):
        create_engines(tiny_bundle, engines={"vae_decoder": ("onnxruntime", "bf16")})
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tvm'"):
        create_engines(tiny_bundle, engines={"unet": "tvm"})
    with pytest.raises(BackendUnavailableError, match="unknown precision 'int4'"):
        create_engines(tiny_bundle, engines={"unet": "onnxruntime:int4"})
    with pytest.raises(BackendUnavailableError, match="does not create"):
        create_engines(tiny_bundle, networks=["unet"], engines={"vae_decoder": "onnxruntime"})
    with pytest.raises(BackendUnavailableError, match="clip_preprocess always runs"):
        create_engines(tiny_bundle, engines={"clip_preprocess": "openvino"})
    with pytest.raises(UnknownNetworkError):
        create_engines(tiny_bundle, engines={"text_encoder": "onnxruntime"})


def test_missing_variant_falls_back_per_network(tiny_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="engines.factory"):
        engines = create_engines(tiny_bundle, engines={"unet": ("onnxruntime", "int8")})
    assert engines["unet"].precision == "fp32" and engines["unet"].path.endswith("unet.onnx")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"bundle {tiny_bundle} has no int8 graph for unet; running fp32 there"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sorted(line.split(":")[0] for line in lines) == sorted(["image_encoder", "vae_encoder", "unet", "vae_decoder"])
    assert "unet: onnxruntime fp32 (unet.onnx)" in lines


@needs_openvino
def test_networks_on_different_backends_make_the_same_clip(tiny_bundle, caplog):
    """OpenVINO for the decoder and CLIP (bf16 where the CPU has it), ONNX Runtime for the rest:
    one log line per network says where it runs, and the 14-frame SF-V clip stays within 30 dB of fp32."""
    from engines.openvino_engine import OpenVINOEngine
    from runtime.pipeline import VideoPipeline

    precision = _ov_bf16()
    choice = {"vae_decoder": ("openvino", precision), "image_encoder": ("openvino", "fp32", 1)}
    with caplog.at_level(logging.INFO, logger="engines.factory"):
        mixed = VideoPipeline.from_bundle(tiny_bundle, threads=1, engines=choice)
    lines = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records if r.levelno == logging.INFO}
    assert lines["vae_decoder"] == f"vae_decoder: openvino {precision} (vae_decoder.onnx), 1 threads"
    assert lines["unet"] == "unet: onnxruntime fp32 (unet.onnx), 1 threads"
    engines = mixed.engines
    assert isinstance(engines.vae_decoder, OpenVINOEngine) and isinstance(engines.image_encoder, OpenVINOEngine)
    assert engines.vae_decoder.inference_precision == ("bf16" if precision == "bf16" else "f32")
    assert isinstance(engines.unet, OnnxRuntimeEngine) and isinstance(engines.clip_preprocess, OnnxRuntimeEngine)
    image = PIL.Image.fromarray((np.random.RandomState(2).rand(64, 64, 3) * 255).astype(np.uint8))
    call = dict(num_frames=14, height=64, width=64, steps=1, min_guidance=1.0, max_guidance=1.0, seed=4, progress=False)
    with mixed, VideoPipeline.from_bundle(tiny_bundle, threads=1) as ref:
        got, want = mixed(image, **call).frames, ref(image, **call).frames
    assert got.shape == want.shape == (14, 64, 64, 3)
    assert _psnr(got, want) >= 30.0


@needs_openvino
def test_generate_cli_engines(tiny_bundle, tmp_path, capsys, caplog):
    from runtime.generate import main

    image = tmp_path / "in.png"
    PIL.Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype(np.uint8)).save(image)
    common = ["--bundle", str(tiny_bundle), "--image", str(image), "--frames", "14", "--height", "48", "--width", "64",
              "--steps", "1", "--max-guidance", "1", "--threads", "1"]
    with caplog.at_level(logging.INFO, logger="engines.factory"):
        rc = main([*common, "--out", str(tmp_path / "a.npy"), "--engines", "vae_decoder=openvino:fp32,unet=onnxruntime"])
    assert rc == 0 and (tmp_path / "a.npy").is_file()
    assert "vae_decoder: openvino fp32 (vae_decoder.onnx), 1 threads" in [r.getMessage() for r in caplog.records]
    rc = main([*common, "--out", str(tmp_path / "b.npy"), "--engines", "unet=onnxruntime:bf16"])
    assert rc == 2 and not (tmp_path / "b.npy").exists()
    assert "bf16 is OpenVINO's inference precision" in capsys.readouterr().err
    rc = main(["--model", "tiny", "--image", str(image), "--out", str(tmp_path / "c.npy"), "--engines", "unet=openvino"])
    assert rc == 2 and "--engines and --recipe choose a bundle's engines" in capsys.readouterr().err
