"""``--unet FILE``: a single safetensors state dict in diffusers keys (AnimateLCM-SVD-xt's format)
replaces the model's UNet, strictly (missing/unexpected keys named), never through pickle; and
``--sampler lcm`` records the sampler with its defaults in the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.errors import ModelLayoutError
from networks.models import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unet_file(tiny_model_dir, tmp_path_factory):
    """The tiny UNet's weights perturbed (so that a silent fall-back to the base UNet would show), as one file."""
    from diffusers import UNetSpatioTemporalConditionModel

    unet = UNetSpatioTemporalConditionModel.from_pretrained(tiny_model_dir / "unet")
    state = {k: v + 0.01 for k, v in unet.state_dict().items()}
    path = tmp_path_factory.mktemp("unet-file") / "AnimateLCM-tiny.safetensors"
    save_file(state, str(path))
    return path, state


def test_unet_file_replaces_the_model_unet(tiny_model_dir, unet_file):
    path, state = unet_file
    model = load_model(tiny_model_dir, unet=path)
    loaded = model.unet.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert model.unet_source == str(path.resolve()) and model.config.num_frames == 14


def test_unet_file_key_mismatch_names_the_keys(tiny_model_dir, unet_file, tmp_path):
    _, state = unet_file
    bad = {("model.diffusion_model." + k if k.startswith("conv_in") else k): v for k, v in state.items()}
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(ModelLayoutError) as exc:
        load_model(tiny_model_dir, unet=path)
    msg = str(exc.value)
    assert "2 missing keys (conv_in.bias, conv_in.weight)" in msg
    assert "2 unexpected keys (model.diffusion_model.conv_in.bias, model.diffusion_model.conv_in.weight)" in msg


def test_unet_file_shape_mismatch_and_pickle_are_refused(tiny_model_dir, unet_file, tmp_path):
    _, state = unet_file
    path = tmp_path / "shapes.safetensors"
    save_file({**state, "conv_in.bias": torch.zeros(3)}, str(path))
    with pytest.raises(ModelLayoutError, match=r"conv_in.bias \(3,\) vs \(32,\)"):
        load_model(tiny_model_dir, unet=path)
    pickle = tmp_path / "unet.ckpt"
    pickle.write_bytes(b"not read")
    with pytest.raises(ModelLayoutError, match="never loads pickle"):
        load_model(tiny_model_dir, unet=pickle)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLayoutError, match="not a readable safetensors file"):
        load_model(tiny_model_dir, unet=garbage)


def test_cli_exports_a_unet_file_with_the_lcm_sampler(tiny_model_dir, unet_file, tmp_path):
    path, _ = unet_file
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "export.onnx", "--model", str(tiny_model_dir), "--unet", str(path), "--sampler", "lcm",
                        "--networks", "unet", "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["model"]["unet_source"] == str(path.resolve())
    assert manifest["sampler"]["name"] == "lcm" and manifest["sampler"]["steps"] == 4
    assert (manifest["sampler"]["min_guidance"], manifest["sampler"]["max_guidance"]) == (1.0, 1.2)
    assert manifest["sampler"]["params"]["num_train_timesteps"] == 40

    bad = tmp_path / "bad.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, str(bad))
    r = subprocess.run([sys.executable, "-m", "export.onnx", "--model", str(tiny_model_dir), "--unet", str(bad), "--networks", "unet",
                        "--out", str(tmp_path / "b2"), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "missing keys" in r.stderr and not (tmp_path / "b2" / "manifest.json").exists()
