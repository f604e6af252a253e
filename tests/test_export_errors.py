"""User mistakes in ``python -m export.onnx`` and failure mid-export: clear errors, no bundle left."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from contract.errors import ValidationError
from export.onnx import export_bundle, main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_missing_model_dir(capsys, tmp_path):
    code, err = _run(capsys, "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "b"))
    assert code != 0 and "does not exist" in err and err.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_wrong_layout(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{}")
    code, err = _run(capsys, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "b"))
    assert code != 0 and "diffusers SVD layout" in err


def test_missing_weights(capsys, tmp_path, tiny_model_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    code, err = _run(capsys, "--model", str(model), "--out", str(tmp_path / "b"))
    assert code != 0 and "missing weights" in err and "vae" in err
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unknown_network(capsys, tmp_path):
    code, err = _run(capsys, "--out", str(tmp_path / "b"), "--networks", "unet", "text_encoder")
    assert code != 0 and "'text_encoder'" in err and "vae_decoder" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--height", "50", "--width", "64"], "multiples of 16"),
        (["--height", "64"], "--height and --width together"),
        (["--frames", "0"], "frames must be at least 1"),
        (["--opset", "9"], "opset 9 is not supported"),
    ],
)
def test_out_of_range_options(capsys, tmp_path, argv, message):
    code, err = _run(capsys, "--model", "tiny", "--out", str(tmp_path / "b"), "--networks", "vae_encoder", *argv)
    assert code != 0 and message in err
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unwritable_output(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, err = _run(capsys, "--out", str(tmp_path / "file"), "--networks", "vae_encoder")
    assert code != 0 and "is a file" in err
    code, err = _run(capsys, "--out", str(tmp_path / "file" / "sub"), "--networks", "vae_encoder")
    assert code != 0 and "cannot create output directory" in err


def test_help_explains_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("--model", "--networks", "--fp16", "svd-random", "image_encoder", "examples"):
        assert word in out


def test_failure_mid_export_leaves_no_bundle(tiny_model, tmp_path, monkeypatch):
    """An exception in the second network: no manifest, no graph under a final name, no staging dir."""
    import export.onnx as exporter

    real, calls = exporter.cleanup, []

    def failing_cleanup(model, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(model, **kwargs)

    monkeypatch.setattr(exporter, "cleanup", failing_cleanup)
    with pytest.raises(RuntimeError, match="disk full"):
        export_bundle(tiny_model, tmp_path, networks=["vae_encoder", "vae_decoder"], validate_dims=[])
    assert list(tmp_path.iterdir()) == []


def test_validation_failure_raises_and_leaves_no_bundle(tiny_model, tmp_path, monkeypatch):
    import export.onnx as exporter

    real = exporter.build_specs

    def strict_specs(config):
        specs = real(config)
        specs["vae_encoder"] = dataclasses.replace(specs["vae_encoder"], atol=0.0)
        return specs

    monkeypatch.setattr(exporter, "build_specs", strict_specs)
    with pytest.raises(ValidationError, match=r"vae_encoder \(fp32\) failed validation.*max_abs"):
        export_bundle(tiny_model, tmp_path, networks=["vae_encoder"], validate_dims=[{"batch": 1, "height": 32, "width": 32}])
    assert list(tmp_path.iterdir()) == []


def test_model_pointing_at_a_bundle(capsys, tmp_path, tiny_bundle):
    """--model BUNDLE: says it is a bundle and what --model wants, before loading anything."""
    code, err = _run(capsys, "--model", str(tiny_bundle), "--out", str(tmp_path / "b"))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "is an exported bundle" in err and "diffusers model directory" in err and f"--bundle {tiny_bundle}" in err
    assert not (tmp_path / "b").exists()
