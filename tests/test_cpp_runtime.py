"""The C++ runtime (runtime/cpp): its build and CTest unit tests, its error messages and numerics
against the Python runtime on the tiny bundle, the installed CMake package, and a leak check.

The module builds with ``runtime/cpp/scripts/build.sh`` (deps through the package registries,
cached under runtime/cpp/build/) and is skipped only where cmake or g++ is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "runtime" / "cpp"
BUILD = CPP / "build"

pytestmark = pytest.mark.skipif(
    not (shutil.which("cmake") and shutil.which("g++")),
    reason="the C++ runtime needs cmake and g++ (apt-get install -y cmake g++)",
)

# PIL resizes the C++ port must reproduce byte for byte: up, down, odd sizes, one axis only, and
# both pass orders (Pillow >= 13 runs the vertical pass first when the height shrinks much more).
LANCZOS_CASES = {  # input (width, height) -> output sizes
    (37, 23): [(64, 64), (16, 8), (101, 13), (37, 50), (50, 23), (7, 5), (1, 1)],
    (300, 200): [(128, 64), (64, 128), (299, 201), (101, 13)],
    (40, 90): [(16, 8), (64, 64), (30, 22), (13, 101)],
}


def _run(cmd, timeout=600, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def _build_env(fixtures: Path | None = None) -> dict:
    env = dict(os.environ, PYTHON=sys.executable)
    if fixtures:
        env["SFV_TEST_FIXTURES"] = str(fixtures)
    return env


def _write_fixtures(d: Path) -> None:
    """Inputs and expected outputs for the CTest tests that compare with numpy and Pillow."""
    rng = np.random.default_rng(0)
    cases = []
    for k, ((w, h), outs) in enumerate(LANCZOS_CASES.items()):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[: h // 2, : w // 2] = 255  # hard edges: the negative lobes must clip as in Pillow
        img[h // 2 :, w // 2 :, 1] = 0
        np.save(d / f"lanczos_in_{k}.npy", img)
        for ow, oh in outs:
            out = np.asarray(PIL.Image.fromarray(img).resize((ow, oh), PIL.Image.LANCZOS))
            np.save(d / f"lanczos_{k}_{ow}x{oh}.npy", out)
            cases.append(f"lanczos_in_{k}.npy {ow} {oh} lanczos_{k}_{ow}x{oh}.npy")
    (d / "lanczos_cases.txt").write_text("\n".join(cases) + "\n")
    np.save(d / "np_f4.npy", np.array([1.5, -2.0, 3.25, 0.0, 1e-8, 7.0], np.float32).reshape(2, 3))
    noise = {
        "augmentation": (np.arange(1 * 3 * 4 * 6, dtype=np.float32) / 8).reshape(1, 3, 4, 6),
        "latents": (np.arange(1 * 2 * 4 * 2 * 3, dtype=np.float32) / 8).reshape(1, 2, 4, 2, 3),
    }
    np.savez(d / "noise.npz", **noise)
    np.savez_compressed(d / "noise_compressed.npz", **noise)


@pytest.fixture(scope="module")
def cpp_build(tmp_path_factory):
    """Build the release tree and run CTest with the fixtures; returns the build directory."""
    fixtures = tmp_path_factory.mktemp("cpp-fixtures")
    _write_fixtures(fixtures)
    r = _run(["bash", CPP / "scripts" / "build.sh"], env=_build_env(fixtures))
    assert r.returncode == 0, f"build.sh failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return BUILD / "release", r.stdout


@pytest.fixture(scope="module")
def generate(cpp_build):
    exe = cpp_build[0] / "sfv-generate"
    return lambda *args, **kw: _run([exe, *args], **kw)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 70 x 50 RGB test image (not the model size: both runtimes must resize it)."""
    path = tmp_path_factory.mktemp("cpp-image") / "in.png"
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:50, 0:70]
    img = np.stack([xx * 3, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    PIL.Image.fromarray(img).save(path)
    return path


def test_ctest_unit_tests_pass(cpp_build):
    out = cpp_build[1]
    assert "100% tests passed" in out, out
    assert "Skipped" not in out and "Not Run" not in out, out  # the fixtures reached every test


# ---------------------------------------------------------------------------- error messages


def _python_error(fn) -> str:
    from contract.errors import ToolkitError

    with pytest.raises(ToolkitError) as exc:
        fn()
    return str(exc.value)


def _cpp_error(generate, bundle, image, out, *extra) -> str:
    r = generate("--bundle", bundle, "--image", image, "--out", out, *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    return r.stderr[len("error: ") :].strip()


def test_cpp_errors_match_python(generate, tiny_bundle, image, tmp_path):
    from contract.bundle import Bundle
    from contract.specs import check_resolution

    out = tmp_path / "clip.npy"
    missing = tmp_path / "no-such-bundle"
    assert _cpp_error(generate, missing, image, out) == _python_error(lambda: Bundle.load(missing))

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert _cpp_error(generate, old, image, out) == _python_error(lambda: Bundle.load(old))

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_bundle, corrupt)
    bundle = Bundle.load(corrupt)
    graph = bundle.path("vae_decoder")
    graph.write_bytes(graph.read_bytes() + b"\0")
    assert _cpp_error(generate, corrupt, image, out) == _python_error(lambda: bundle.verify("vae_decoder"))

    config = Bundle.load(tiny_bundle).config
    assert _cpp_error(generate, tiny_bundle, image, out, "--height", "60") == _python_error(
        lambda: check_resolution(config, 60, config.default_width)
    )
    assert not out.exists()  # nothing written on failure


def test_cpp_refuses_bad_noise_and_output(generate, tiny_bundle, image, tmp_path):
    noise = tmp_path / "noise.npz"
    np.savez_compressed(noise, augmentation=np.zeros((1, 3, 64, 64), np.float32), latents=np.zeros((1, 2, 4, 8, 8), np.float32))
    msg = _cpp_error(generate, tiny_bundle, image, tmp_path / "c.npy", "--noise", noise, "--frames", "2")
    assert "np.savez_compressed" in msg
    np.savez(noise, augmentation=np.zeros((1, 3, 64, 64), np.float32), latents=np.zeros((1, 3, 4, 8, 8), np.float32))
    from runtime.noise import ExplicitNoise

    assert _cpp_error(generate, tiny_bundle, image, tmp_path / "c.npy", "--noise", noise, "--frames", "2") == _python_error(
        lambda: ExplicitNoise.load(noise).latents((1, 2, 4, 8, 8))
    )
    assert "unknown extension '.mp4'" in _cpp_error(generate, tiny_bundle, image, tmp_path / "c.mp4")


# ---------------------------------------------------------------------------- parity with Python


PARITY = {
    "svd-25-steps-guided": ["--steps", "25", "--min-guidance", "1.0", "--max-guidance", "3.0"],
    "sfv-one-step": ["--steps", "1", "--max-guidance", "1"],
}
CLIP = ["--frames", "3", "--height", "64", "--width", "128", "--decode-chunk", "2", "--fps", "6", "--motion-bucket-id", "100", "--noise-aug", "0.05"]
# The numeric parity runs at the model's own frame count and size (14 frames of 64x64 for the tiny
# model; frames None: --frames left out) and at 8 frames; decoded in chunks of 4, so the last chunk
# is a short one.
PARITY_CLIP = ["--decode-chunk", "4", "--fps", "6", "--motion-bucket-id", "100", "--noise-aug", "0.05"]


def _noise_file(path: Path, frames: int, height: int = 64, width: int = 128, seed: int = 11) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, augmentation=rng.standard_normal((1, 3, height, width), dtype=np.float32),
             latents=rng.standard_normal((1, frames, 4, height // 8, width // 8), dtype=np.float32))
    return path


def _both(generate, bundle, image, tmp_path, *args) -> dict:
    """Run sfv-generate and `python -m runtime.generate` with the same arguments: their frames,
    latents and stderr."""
    out = {}
    for name, run in (("cpp", lambda *a: generate(*a)),
                      ("py", lambda *a: _run([sys.executable, "-m", "runtime.generate", *a, "--quiet"], cwd=ROOT))):
        r = run("--bundle", bundle, "--image", image, "--out", tmp_path / f"{name}.npy", "--save-latents", tmp_path / f"{name}_lat.npy", *args)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        out[name] = (np.load(tmp_path / f"{name}.npy"), np.load(tmp_path / f"{name}_lat.npy"), r.stderr)
    return out


@pytest.mark.parametrize("frames", [None, 8])
@pytest.mark.parametrize("mode", sorted(PARITY))
def test_cpp_matches_python(mode, frames, generate, tiny_bundle, image, tmp_path):
    """Same bundle, image and explicit noise: final latents within 1e-5, frames within 1 level."""
    from contract.bundle import Bundle

    config = Bundle.load(tiny_bundle).config
    F, H, W = frames or config.num_frames, config.default_height, config.default_width
    assert F >= 8
    noise = _noise_file(tmp_path / "noise.npz", F, H, W)
    args = [*PARITY_CLIP, *PARITY[mode], "--noise", noise, *([] if frames is None else ["--frames", str(frames)])]
    got = _both(generate, tiny_bundle, image, tmp_path, *args)
    (cpp, cpp_lat, _), (py, py_lat, _) = got["cpp"], got["py"]
    assert cpp_lat.shape == py_lat.shape == (1, F, 4, H // 8, W // 8)
    lat_err, frame_err = np.abs(cpp_lat - py_lat).max(), np.abs(cpp.astype(int) - py.astype(int)).max()
    print(f"{mode}, {F} frames: latents max |C++ - Python| {lat_err:.3g}, frames max {frame_err} levels")
    assert lat_err <= 1e-5
    assert cpp.dtype == py.dtype == np.uint8 and cpp.shape == py.shape == (F, H, W, 3)
    assert frame_err <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_reads_the_same_in_both_runtimes(channels, generate, tiny_bundle, tmp_path):
    """A 16-bit PNG (grey: where Pillow's own conversion clips; RGB) becomes the same RGB8 in both
    runtimes (runtime/preprocess.py's rule), so the clips match as for an 8-bit image."""
    from png16 import write_png16

    yy, xx = np.mgrid[0:50, 0:70]
    grey = (xx * 900 + yy * 40).astype(np.uint16)  # most values above 255: their high byte matters
    samples = grey if channels == 1 else np.stack([grey, 65535 - grey, (yy * 1300).astype(np.uint16)], axis=-1)
    png = write_png16(tmp_path / "in16.png", samples)
    noise = _noise_file(tmp_path / "noise.npz", 3)
    got = _both(generate, tiny_bundle, png, tmp_path, *CLIP, "--steps", "1", "--max-guidance", "1", "--noise", noise)
    assert np.abs(got["cpp"][1] - got["py"][1]).max() <= 1e-5
    assert np.abs(got["cpp"][0].astype(int) - got["py"][0].astype(int)).max() <= 1


def test_cpp_precision_fallback_warns_as_python(generate, tiny_bundle, image, tmp_path):
    """--precision int8 on a bundle without int8 graphs: both runtimes run fp32 and say so, in the same words."""
    noise = _noise_file(tmp_path / "noise.npz", 3)
    got = _both(generate, tiny_bundle, image, tmp_path, *CLIP, "--steps", "1", "--max-guidance", "1", "--noise", noise,
                "--precision", "int8")
    warning = f"bundle {tiny_bundle} has no int8 graph for image_encoder, vae_encoder, unet, vae_decoder; running fp32 there"
    assert warning in got["py"][2].splitlines() and warning in got["cpp"][2].splitlines(), (got["py"][2], got["cpp"][2])
    assert np.abs(got["cpp"][1] - got["py"][1]).max() <= 1e-5


def test_cpp_read_only_output_fails_before_the_work_as_python(cpp_build, tiny_bundle, image, tmp_path):
    """--out or --save-latents in a read-only directory: both runtimes refuse before the clip, in the same words."""
    from unprivileged import unprivileged

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    common = ["--bundle", tiny_bundle, "--image", image, "--frames", "2", "--steps", "1", "--max-guidance", "1", "--quiet"]
    python = [sys.executable, "-m", "runtime.generate"]
    try:
        for extra in (["--out", ro / "clip.npy"], ["--out", ro / "frames"], ["--out", tmp_path / "c.npy", "--save-latents", ro / "l.npy"]):
            errors = []
            for exe in ([cpp_build[0] / "sfv-generate"], python):
                r = _run(unprivileged([*exe, *common, *extra]), cwd=ROOT)
                assert r.returncode == 2 and r.stderr.startswith("error: cannot write"), r.stderr
                errors.append(r.stderr)
            assert errors[0] == errors[1] and "not writable" in errors[0]
            assert list(ro.iterdir()) == [] and not (tmp_path / "c.npy").exists()
    finally:
        ro.chmod(0o755)


def test_cpp_bundle_given_as_its_manifest(generate, tiny_bundle, image, tmp_path):
    args = [*CLIP, "--steps", "1", "--max-guidance", "1", "--seed", "3"]
    r = generate("--bundle", tiny_bundle / "manifest.json", "--image", image, "--out", tmp_path / "a.npy", *args)
    assert r.returncode == 0, r.stderr
    r = generate("--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "b.npy", *args)
    assert r.returncode == 0 and np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    msg = _cpp_error(generate, tiny_bundle / "unet.onnx", image, tmp_path / "c.npy")
    assert "pass the directory" in msg


@pytest.fixture(scope="module")
def fast_bundle(tiny_model, tiny_bundle, tmp_path_factory):
    """The tiny bundle plus a vae_decoder_fast: a small random-initialised FastDecoder, exported and validated."""
    from export.onnx import export_bundle
    from networks.fast_decoder import FastDecoder, FastDecoderConfig, save_fast_decoder

    root = tmp_path_factory.mktemp("fast")
    save_fast_decoder(FastDecoder(FastDecoderConfig(channels=(16, 16, 8, 8), blocks=(1, 1, 1, 1))), root / "decoder")
    bundle = root / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    export_bundle(tiny_model, bundle, networks=["vae_decoder_fast"], fast_decoder=root / "decoder", progress=False)
    return bundle


def test_cpp_fast_decoder_matches_python(generate, fast_bundle, tiny_bundle, image, tmp_path):
    """--decoder fast: the same frames as Python's from vae_decoder_fast, other frames than the full
    decoder's from the same latents; on a bundle without it, Python's error."""
    noise = _noise_file(tmp_path / "noise.npz", 3)
    args = [*CLIP, "--steps", "1", "--max-guidance", "1", "--noise", noise]
    fast = _both(generate, fast_bundle, image, tmp_path, *args, "--decoder", "fast")
    assert np.abs(fast["cpp"][1] - fast["py"][1]).max() <= 1e-5
    assert np.abs(fast["cpp"][0].astype(int) - fast["py"][0].astype(int)).max() <= 1
    r = generate("--bundle", fast_bundle, "--image", image, "--out", tmp_path / "full.npy", "--save-latents", tmp_path / "full_lat.npy", *args)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "full_lat.npy"), fast["cpp"][1])
    assert np.abs(np.load(tmp_path / "full.npy").astype(int) - fast["cpp"][0].astype(int)).max() > 10
    from runtime.pipeline import VideoPipeline

    msg = _cpp_error(generate, tiny_bundle, image, tmp_path / "x.npy", "--decoder", "fast")
    assert msg == _python_error(lambda: VideoPipeline.from_bundle(tiny_bundle)(str(image), decoder="fast"))


def test_cpp_seed_draws_pythons_splitmix_noise(generate, tiny_bundle, image, tmp_path):
    """--seed in sfv-generate is `--generator splitmix --seed` in Python: the same clip."""
    args = [*CLIP, "--steps", "1", "--max-guidance", "1"]
    r = generate("--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "cpp.npy", "--save-latents", tmp_path / "cpp_lat.npy",
                 "--seed", "1234", *args)
    assert r.returncode == 0, r.stderr
    r = _run([sys.executable, "-m", "runtime.generate", "--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "py.npy",
              "--save-latents", tmp_path / "py_lat.npy", "--generator", "splitmix", "--seed", "1234", "--quiet", *args], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cpp_lat = np.load(tmp_path / "cpp_lat.npy")
    assert np.abs(cpp_lat - np.load(tmp_path / "py_lat.npy")).max() <= 1e-5
    assert np.abs(np.load(tmp_path / "cpp.npy").astype(int) - np.load(tmp_path / "py.npy")).max() <= 1
    r = generate("--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "c0.npy", "--save-latents", tmp_path / "c0_lat.npy",
                 "--seed", "0", *args)
    assert r.returncode == 0 and np.abs(cpp_lat - np.load(tmp_path / "c0_lat.npy")).max() > 0.1  # the seed matters


# ---------------------------------------------------------------------------- packaging, leaks


def test_installed_package_links_an_app(cpp_build, tiny_bundle, image, tmp_path):
    """`cmake --install`, then an app with find_package(sfv_runtime) (README's snippet) runs a clip."""
    prefix = tmp_path / "prefix"
    r = _run(["cmake", "--install", cpp_build[0], "--prefix", prefix])
    assert r.returncode == 0, r.stderr
    app = tmp_path / "app-build"
    r = _run(["cmake", "-S", CPP / "examples" / "app", "-B", app, f"-DCMAKE_PREFIX_PATH={prefix}", "-Wno-dev"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(["cmake", "--build", app])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([app / "app", tiny_bundle])
    assert r.returncode == 0, r.stderr
    assert "frames" in r.stdout


def test_sfv_generate_under_address_sanitizer(tiny_bundle, image, tmp_path):
    """AddressSanitizer + LeakSanitizer build of sfv-generate: a clip and a failing run, no report (exit 23 if any)."""
    r = _run(["bash", CPP / "scripts" / "build.sh", "--sanitize"], env=_build_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exe = BUILD / "asan" / "sfv-generate"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=23")
    r = _run([exe, "--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "f", "--frames", "2", "--steps", "2", "--quiet"], env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["frame_0000.png", "frame_0001.png"]
    r = _run([exe, "--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "g.npy", "--height", "60"], env=env)
    assert r.returncode == 2, r.stderr[-6000:]  # an error path frees everything too


def test_time_to_first_clip(generate, tiny_bundle, image, tmp_path):
    """Record (not gate) process start -> clip written for the tiny bundle, one step."""
    start = time.perf_counter()
    r = generate("--bundle", tiny_bundle, "--image", image, "--out", tmp_path / "c.npy", "--steps", "1", "--max-guidance", "1", "--quiet")
    elapsed = time.perf_counter() - start
    assert r.returncode == 0 and (tmp_path / "c.npy").is_file()
    print(f"sfv-generate: first clip written {elapsed:.2f} s after process start")
