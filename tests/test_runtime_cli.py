"""``python -m runtime.generate``: a playable mp4 with the requested frames; clear errors, non-zero
exit and nothing at --out when something is wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import torch

from runtime.generate import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "in.png"
    PIL.Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype(np.uint8)).save(path)
    return path


def test_onnxruntime_bundle_to_mp4(tiny_bundle, image_path, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["--bundle", str(tiny_bundle), "--image", str(image_path), "--out", str(out), "--backend", "onnxruntime",
               "--frames", "6", "--steps", "2", "--height", "48", "--width", "64", "--fps", "8", "--decode-chunk", "4",
               "--threads", "1", "--quiet"])
    assert rc == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 8
    assert len(decoded) == 6 and decoded[0].shape == (48, 64, 3)
    printed = capsys.readouterr().out
    assert "wrote" in printed and "6 frames 64x48" in printed
    assert "unet" in printed and "(2 calls)" in printed and "total" in printed


def test_model_one_step_to_npy_matches_api(tiny_model, image_path, tmp_path):
    from runtime.pipeline import VideoPipeline

    out = tmp_path / "clip.npy"
    args = ["--model", "tiny", "--image", str(image_path), "--out", str(out), "--frames", "3", "--steps", "1",
            "--max-guidance", "1", "--seed", "7", "--quiet"]
    assert main(args) == 0
    ref = VideoPipeline.from_model(tiny_model)(str(image_path), num_frames=3, steps=1, max_guidance=1.0, seed=7, progress=False)
    assert np.array_equal(np.load(out), ref.frames)


def test_explicit_noise_reproduces_a_run(tiny_bundle, image_path, tmp_path):
    """--save-noise then --noise: the same frames and latents (how two runtimes are compared)."""
    common = ["--bundle", str(tiny_bundle), "--image", str(image_path), "--frames", "3", "--steps", "2", "--threads", "1", "--quiet"]
    a, b, c = (tmp_path / f"{n}.npy" for n in "abc")
    assert main(common + ["--out", str(a), "--generator", "splitmix", "--seed", "3", "--save-noise", str(tmp_path / "n.npz"),
                          "--save-latents", str(tmp_path / "la.npy")]) == 0
    assert main(common + ["--out", str(b), "--noise", str(tmp_path / "n.npz"), "--save-latents", str(tmp_path / "lb.npy")]) == 0
    assert main(common + ["--out", str(c), "--generator", "splitmix", "--seed", "4"]) == 0
    assert np.array_equal(np.load(a), np.load(b)) and not np.array_equal(np.load(a), np.load(c))
    assert np.array_equal(np.load(tmp_path / "la.npy"), np.load(tmp_path / "lb.npy"))
    with np.load(tmp_path / "n.npz") as noise:
        assert noise["augmentation"].shape == (1, 3, 64, 64) and noise["latents"].shape == (1, 3, 4, 8, 8)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--steps 1 --max-guidance 1" in out and "coloured noise" in out


def _fails(args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc != 0, err
    assert err.startswith("error: ") and match in err and "Traceback" not in err
    return err


def test_errors_leave_nothing_at_out(tiny_bundle, image_path, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    base = ["--image", str(image_path), "--out", str(out), "--quiet"]
    bundle = ["--bundle", str(tiny_bundle)]
    _fails(bundle + ["--image", str(tmp_path / "missing.png"), "--out", str(out)], capsys, "does not exist")
    (tmp_path / "notes.png").write_text("text, not pixels")
    _fails(bundle + ["--image", str(tmp_path / "notes.png"), "--out", str(out)], capsys, "not a readable image")
    _fails(bundle + base + ["--height", "40"], capsys, "multiples of 16")
    _fails(bundle + ["--image", str(image_path), "--out", str(tmp_path / "clip.avi")], capsys, "unknown extension")
    _fails(["--bundle", str(tmp_path / "nowhere")] + base, capsys, "does not exist")
    _fails(["--model", "tiny", "--backend", "onnxruntime"] + base, capsys, "torch backend")
    (tmp_path / "noise.npz").write_bytes(b"")
    _fails(bundle + base + ["--noise", str(tmp_path / "noise.npz")], capsys, "noise")
    (tmp_path / "noise.npz").unlink()
    _fails(bundle + ["--image", str(image_path), "--out", str(out), "--steps", "0"], capsys, "steps (--steps)")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.png"]


def test_corrupt_manifest(tiny_bundle, image_path, tmp_path, capsys):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    out = tmp_path / "clip.mp4"
    args = ["--bundle", str(bundle), "--image", str(image_path), "--out", str(out), "--quiet"]
    (bundle / "manifest.json").write_text("{truncated")
    _fails(args, capsys, "not valid JSON")
    (bundle / "manifest.json").write_text(json.dumps({"format": "sfv-bundle", "format_version": 99}))
    _fails(args, capsys, "format_version")
    (bundle / "manifest.json").unlink()
    _fails(args, capsys, "no manifest.json")
    assert not out.exists()


def test_tensorrt_unavailable(tiny_bundle, image_path, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present")
    out = tmp_path / "clip.mp4"
    _fails(["--bundle", str(tiny_bundle), "--image", str(image_path), "--out", str(out), "--backend", "tensorrt"],
           capsys, "tensorrt backend needs")
    assert not out.exists()


def test_module_entry_point_exit_code(image_path, tmp_path):
    """The real ``python -m`` process: one error line on stderr, exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.generate", "--model", "tiny", "--image", str(image_path),
         "--out", str(tmp_path / "x.mov")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "error: cannot write video" in proc.stderr and "Traceback" not in proc.stderr


def test_read_only_output_directory_fails_before_the_work(tiny_bundle, image_path, tmp_path):
    from unprivileged import unprivileged

    """--out (or --save-latents) in a read-only directory: one error line, exit 2, checked before the
    clip is computed (so --out, writable, is not written either), nothing left behind."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    common = [sys.executable, "-m", "runtime.generate", "--bundle", tiny_bundle, "--image", image_path, "--frames", "2",
              "--steps", "1", "--max-guidance", "1", "--threads", "1", "--quiet"]
    try:
        for out, extra in [(ro / "clip.mp4", []), (ro / "sub" / "clip.npy", []), (ro / "frames", []),
                           (tmp_path / "clip.npy", ["--save-latents", ro / "latents.npy"])]:
            proc = subprocess.run(unprivileged([*common, "--out", out, *extra]), cwd=ROOT, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.startswith("error: cannot write") and "not writable" in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
            assert list(ro.iterdir()) == [] and not (tmp_path / "clip.npy").exists()
    finally:
        ro.chmod(0o755)


def test_bundle_given_as_its_manifest(tiny_bundle, image_path, tmp_path, capsys):
    """--bundle B/manifest.json runs bundle B; another file of the bundle, or the bundle as --model, is refused with the fix."""
    out = tmp_path / "clip.npy"
    args = ["--image", str(image_path), "--frames", "2", "--steps", "1", "--max-guidance", "1", "--threads", "1", "--quiet"]
    assert main(["--bundle", str(tiny_bundle / "manifest.json"), "--out", str(out), *args]) == 0
    assert np.load(out).shape[0] == 2
    err = _fails(["--bundle", str(tiny_bundle / "unet.onnx"), "--out", str(tmp_path / "x.npy"), *args], capsys,
                 "pass the directory")
    assert "bundle directory" in err and not (tmp_path / "x.npy").exists()
    _fails(["--model", str(tiny_bundle), "--out", str(tmp_path / "x.npy"), *args], capsys, f"pass it as --bundle {tiny_bundle}")
    assert not (tmp_path / "x.npy").exists()
