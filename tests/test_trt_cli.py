"""``python -m export.trt`` without TensorRT or a GPU, and its argument validation.

Every error here must print one ``error: ...`` line (argparse's own errors: its usage line plus
``error: ...``), exit non-zero and leave the bundle exactly as it was.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract.bundle import Bundle, new_manifest
from contract.specs import ModelConfig
from export.trt import main
from engines.trt_cache import missing_requirements

ROOT = Path(__file__).resolve().parents[1]


# These tests need a machine that lacks TensorRT or a GPU (CI, laptops).
needs_no_trt = pytest.mark.skipif(not missing_requirements(), reason="TensorRT and a GPU are available here")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    return root


@pytest.fixture
def svd_manifest_dir(tmp_path):
    """A bundle manifest of the SVD config with no graphs yet (enough for argument checks)."""
    root = tmp_path / "svd"
    root.mkdir()
    Bundle(root=root, manifest=new_manifest("svd-random", "svd-random", ModelConfig(), {})).save()
    return root


@needs_no_trt
def test_no_tensorrt_export_writes_nothing(capsys, tmp_path):
    out = tmp_path / "b"
    code, err = _run(capsys, "--fp16", "--model", "tiny", "--out", out)
    assert code == 2 and err.startswith("error: ")
    assert "tensorrt" in err and "NVIDIA GPU" in err and "pip install '.[gpu]'" in err
    assert "driver" in err
    assert not out.exists()  # checked before exporting anything


@needs_no_trt
@pytest.mark.parametrize("precision", ["--fp16", "--int8", "--fp8"])
def test_no_tensorrt_existing_bundle_untouched(capsys, bundle_dir, precision):
    before = _snapshot(bundle_dir)
    code, err = _run(capsys, "--bundle", bundle_dir, precision)
    assert code == 2 and "tensorrt" in err and "pip install '.[gpu]'" in err
    assert _snapshot(bundle_dir) == before
    assert not list(bundle_dir.glob("*.plan"))


@needs_no_trt
def test_module_entry_point(tmp_path):
    out = tmp_path / "b"
    proc = subprocess.run(
        [sys.executable, "-m", "export.trt", "--fp16", "--model", "tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert "pip install '.[gpu]'" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--frames", "25:14:1", "MIN <= OPT <= MAX"),
        ("--frames", "1:14", "MIN:OPT:MAX"),
        ("--batch", "x", "integers"),
        ("--decode-chunk", "0:7:14", "at least 1"),
        ("--networks", "text_encoder", "invalid choice"),
        ("--builder-optimization-level", "7", "invalid choice"),
    ],
)
def test_bad_arguments(capsys, svd_manifest_dir, flag, value, message):
    before = _snapshot(svd_manifest_dir)
    with pytest.raises(SystemExit) as info:
        main(["--bundle", str(svd_manifest_dir), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and flag in err
    assert _snapshot(svd_manifest_dir) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--height", "500"], "multiples of 64"),
        (["--width", "256:1000:1024"], "multiples of 64"),
        (["--fp16", "--networks", "unet"], "holds no networks"),
        (["--fp16"], "holds no networks"),
        (["--workspace", "0"], "positive size in GiB"),
    ],
)
def test_checked_before_any_gpu_work(capsys, svd_manifest_dir, args, message):
    before = _snapshot(svd_manifest_dir)
    code, err = _run(capsys, "--bundle", svd_manifest_dir, *args)
    assert code == 2 and message in err
    assert _snapshot(svd_manifest_dir) == before


def test_tiny_sizes_follow_its_pixel_multiple(capsys, bundle_dir):
    code, err = _run(capsys, "--bundle", bundle_dir, "--height", "40:64:64")
    assert code == 2 and "multiples of 16" in err


def test_network_missing_from_bundle(capsys, bundle_dir):
    bundle = Bundle.load(bundle_dir)
    del bundle.manifest["networks"]["unet"]
    bundle.save()
    code, err = _run(capsys, "--bundle", bundle_dir, "--networks", "unet", "vae_decoder")
    assert code == 2 and "has no unet" in err and "python -m export.onnx" in err


def test_missing_bundle_without_model(capsys, tmp_path):
    code, err = _run(capsys, "--bundle", tmp_path / "nope", "--fp16")
    assert code == 2 and "--model" in err and "python -m export.onnx" in err
    assert not (tmp_path / "nope").exists()


def test_one_precision_at_a_time(capsys, svd_manifest_dir):
    with pytest.raises(SystemExit) as info:
        main(["--bundle", str(svd_manifest_dir), "--fp16", "--int8"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_help_names_the_gpu_requirement_and_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "NVIDIA GPU" in out and "tensorrt>=10.12,<12" in out
    assert "examples:" in out and "python -m export.trt --bundle out/svd --int8" in out
    for flag in ("--fp16", "--int8", "--fp8"):
        assert flag in out
