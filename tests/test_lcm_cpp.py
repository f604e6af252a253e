"""The C++ runtime's consistency sampler (``--sampler lcm``) against the Python runtime: same bundle,
image and noise (saved torch draws, or both runtimes' splitmix streams) give latents within 1e-5
and frames within 1 level; an lcm bundle of the XT-shaped tiny model runs at its manifest's
defaults (25 frames, 4 steps, guidance 1.0 -> 1.2) in both.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.test_cpp_runtime import ROOT, _cpp_error, _run, cpp_build, generate, image  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not (ROOT / "runtime" / "cpp" / "CMakeLists.txt").is_file(), reason="no C++ runtime")

CLIP = ["--frames", "3", "--height", "64", "--width", "128", "--decode-chunk", "2"]


def _python(bundle, image, out, *args):
    r = _run([sys.executable, "-m", "runtime.generate", "--bundle", bundle, "--image", image, "--out", out / "py.npy",
              "--save-latents", out / "py_lat.npy", "--quiet", *args], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return np.load(out / "py_lat.npy"), np.load(out / "py.npy")


def _cpp(generate, bundle, image, out, *args):
    r = generate("--bundle", bundle, "--image", image, "--out", out / "cpp.npy", "--save-latents", out / "cpp_lat.npy", "--quiet", *args)
    assert r.returncode == 0, r.stderr
    return np.load(out / "cpp_lat.npy"), np.load(out / "cpp.npy")


def _close(a, b):
    (lat_a, frames_a), (lat_b, frames_b) = a, b
    assert lat_a.shape == lat_b.shape and frames_a.shape == frames_b.shape
    assert np.abs(lat_a - lat_b).max() <= 1e-5
    assert np.abs(frames_a.astype(int) - frames_b.astype(int)).max() <= 1


@pytest.mark.parametrize("steps", ["2", "4"])
def test_cpp_lcm_matches_python_on_saved_torch_noise(generate, tiny_bundle, image, tmp_path, steps):
    """Python draws with torch (augmentation, latents, then one array per step) and saves them; C++ replays them."""
    args = [*CLIP, "--sampler", "lcm", "--steps", steps]
    py = _python(tiny_bundle, image, tmp_path, *args, "--generator", "torch", "--save-noise", tmp_path / "noise.npz")
    with np.load(tmp_path / "noise.npz") as saved:
        assert saved["steps"].shape == (int(steps) - 1, 1, 3, 4, 8, 16)
    _close(_cpp(generate, tiny_bundle, image, tmp_path, *args, "--noise", tmp_path / "noise.npz"), py)


def test_cpp_lcm_refuses_noise_without_steps(generate, tiny_bundle, image, tmp_path):
    noise = tmp_path / "noise.npz"
    np.savez(noise, augmentation=np.zeros((1, 3, 64, 128), np.float32), latents=np.zeros((1, 3, 4, 8, 16), np.float32))
    msg = _cpp_error(generate, tiny_bundle, image, tmp_path / "c.npy", *CLIP, "--sampler", "lcm", "--noise", noise)
    assert "the lcm sampler needs 'steps' float32 [3, 1, 3, 4, 8, 16]" in msg and "--save-noise" in msg


@pytest.fixture(scope="module")
def xt_lcm_bundle(tmp_path_factory):
    from export.onnx import export_bundle

    out = tmp_path_factory.mktemp("xt-lcm-cpp")
    export_bundle("tiny-xt", out, sampler="lcm", progress=False)
    return out


def test_cpp_runs_an_xt_lcm_bundle_at_its_defaults(generate, xt_lcm_bundle, image, tmp_path):
    """No sampler, steps, guidance or frame flags: both runtimes take them from the manifest; splitmix noise."""
    args = ["--height", "64", "--width", "64", "--seed", "7"]
    cpp = _cpp(generate, xt_lcm_bundle, image, tmp_path, *args)
    assert cpp[1].shape == (25, 64, 64, 3)
    _close(cpp, _python(xt_lcm_bundle, image, tmp_path, *args, "--generator", "splitmix"))
    # and --sampler euler overrides the bundle's: Euler's own defaults (25 steps, guidance 1 -> 3) in both
    args += ["--sampler", "euler", "--steps", "2"]
    _close(_cpp(generate, xt_lcm_bundle, image, tmp_path, *args), _python(xt_lcm_bundle, image, tmp_path, *args, "--generator", "splitmix"))


def test_cpp_bundle_sampler_errors_match_python(generate, tiny_bundle, image, tmp_path):
    from contract.bundle import Bundle
    from tests.test_cpp_runtime import _python_error

    bad = tmp_path / "bundle"
    bad.mkdir()
    for f in tiny_bundle.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "manifest.json").unlink()
    # a missing generation default (fps) is an error in both readers, never SVD's default
    for edit in (lambda m: m.update(sampler={"name": "ddim"}), lambda m: m["model"]["config"].pop("num_frames"),
                 lambda m: m["model"]["config"].pop("fps")):
        manifest = json.loads((tiny_bundle / "manifest.json").read_text())
        edit(manifest)
        (bad / "manifest.json").write_text(json.dumps(manifest))
        python = _python_error(lambda: Bundle.load(bad))
        assert "'ddim'" in python or "lacks num_frames" in python or "model.config lacks fps" in python
        assert _cpp_error(generate, bad, image, tmp_path / "c.npy") == python
