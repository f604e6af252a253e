"""The runtime runs a bundle without torch, diffusers or transformers.

Two checks: in a subprocess of this environment with those packages made unimportable
(``sys.modules[name] = None``, which is what an absent package looks like to ``import`` and to
``importlib.util.find_spec``); and, the real thing, a fresh venv with the base install only
(``pip install .``, no extras), which must run ``python -m runtime.generate`` on a bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "onnx", "polygraphy", "accelerate")

PROBE = """
import json, sys
for name in {heavy!r}:
    sys.modules.setdefault(name, None) if {block} else None
from runtime.generate import main
rc = main(sys.argv[1:])
loaded = sorted({{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}} & set({heavy!r}))
print("PROBE " + json.dumps({{"rc": rc, "loaded": loaded}}))
"""


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "in.png"
    PIL.Image.fromarray((np.random.RandomState(2).rand(64, 64, 3) * 255).astype(np.uint8)).save(path)
    return path


def _probe(python: str, tiny_bundle, image_path, out, block: bool, cwd, *extra: str) -> dict:
    """``{"rc", "loaded"}`` of one ``runtime.generate`` run in a fresh process (``loaded``: the heavy
    packages it imported); ``stderr`` too when the run failed."""
    args = ["--bundle", str(tiny_bundle), "--image", str(image_path), "--out", str(out), "--frames", "3", "--steps", "1",
            "--max-guidance", "1", "--threads", "1", "--quiet", *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, "-c", PROBE.format(heavy=HEAVY, block=block), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1][6:])
    return result if result["rc"] == 0 else {**result, "stderr": proc.stderr}


def _says_install_export(result: dict) -> None:
    """The torch backend without torch: exit 2, one line naming the extra to install."""
    assert result["rc"] == 2 and result["loaded"] == [], result
    assert result["stderr"].startswith("error: ") and len(result["stderr"].strip().splitlines()) == 1, result
    assert "torch" in result["stderr"] and "pip install '.[export]'" in result["stderr"], result


def test_generate_imports_no_model_library(tiny_bundle, image_path, tmp_path):
    result = _probe(sys.executable, tiny_bundle, image_path, tmp_path / "clip.mp4", block=True, cwd=ROOT)
    assert result == {"rc": 0, "loaded": []}
    assert (tmp_path / "clip.mp4").stat().st_size > 0


def test_generate_without_blocking_loads_no_model_library_either(tiny_bundle, image_path, tmp_path):
    """With torch installed, the auto generator imports torch (diffusers' noise) and nothing else heavy."""
    result = _probe(sys.executable, tiny_bundle, image_path, tmp_path / "clip.npy", block=False, cwd=ROOT)
    assert result["rc"] == 0 and set(result["loaded"]) <= {"torch"}


@pytest.mark.parametrize("noise", ["splitmix", "explicit"])
def test_torch_installed_but_not_asked_for_is_not_imported(noise, tiny_bundle, image_path, tmp_path):
    """torch installed, the ONNX Runtime path with noise that needs no torch (--generator splitmix, or
    --noise FILE): no module of the runtime, engines or bundle contract imports torch on the way."""
    if noise == "explicit":
        from runtime.noise import SplitMixNoise, save_noise

        draw = SplitMixNoise(5)
        save_noise(tmp_path / "noise.npz", draw.augmentation((1, 3, 64, 64)), draw.latents((1, 3, 4, 8, 8)))
    extra = ["--generator", "splitmix"] if noise == "splitmix" else ["--noise", str(tmp_path / "noise.npz")]
    result = _probe(sys.executable, tiny_bundle, image_path, tmp_path / "clip.mp4", False, ROOT, *extra)
    assert result == {"rc": 0, "loaded": []}


def test_torch_backend_without_torch_says_what_to_install(tiny_bundle, image_path, tmp_path):
    """--backend torch where torch is absent: a clear error before any work, not ModuleNotFoundError."""
    _says_install_export(_probe(sys.executable, tiny_bundle, image_path, tmp_path / "a.npy", True, ROOT, "--backend", "torch"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(os.environ.get("SFV_SKIP_VENV_TESTS") == "1", reason="SFV_SKIP_VENV_TESTS=1")
def test_runtime_only_install_in_a_fresh_venv(tiny_bundle, image_path, tmp_path):
    """`pip install .` (no extras) into a new venv, run from outside the checkout: a clip, no torch."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    proc = subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert not names & {"torch", "diffusers", "transformers"}
    result = _probe(python, tiny_bundle, image_path, tmp_path / "clip.mp4", block=False, cwd=tmp_path)
    assert result == {"rc": 0, "loaded": []}
    assert (tmp_path / "clip.mp4").stat().st_size > 0
    _says_install_export(_probe(python, tiny_bundle, image_path, tmp_path / "t.npy", False, tmp_path, "--backend", "torch"))
