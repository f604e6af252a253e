"""One place for environment facts: library versions, GPU checks, network names, quiet imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contract.environment import library_versions, missing_gpu, require_gpu
from contract.errors import BackendUnavailableError, UnknownNetworkError

ROOT = Path(__file__).resolve().parents[1]


def test_library_versions_of_installed_and_missing_distributions():
    import onnx

    versions = library_versions(["onnx", "onnx_graphsurgeon", "no-such-distribution-here"])
    assert versions["onnx"] == onnx.__version__
    assert versions["onnx_graphsurgeon"]  # the underscore spelling finds onnx-graphsurgeon
    assert versions["no-such-distribution-here"] is None


def test_engine_factory_and_export_use_the_same_network_check(tiny_model):
    from engines.factory import torch_engines
    from export.onnx import export_bundle

    for call in (lambda: torch_engines(tiny_model, networks=["decoder"]), lambda: export_bundle(tiny_model, "unused", networks=["decoder"])):
        with pytest.raises(UnknownNetworkError, match="unknown network.*'decoder'"):
            call()


@pytest.mark.skipif(not missing_gpu(), reason="a CUDA GPU is available here")
def test_torch_engine_on_cuda_names_what_is_missing(tiny_model):
    from engines.factory import torch_engines

    engines, _ = torch_engines(tiny_model, networks=["unet"], device="cuda")
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU; missing here") as info:
        engines["unet"].activate()
    assert all(part in str(info.value) for part in missing_gpu())
    with pytest.raises(BackendUnavailableError, match="pip install"):
        require_gpu("this")


@pytest.mark.parametrize("step", ["write", "run"])
def test_runtime_and_model_loading_print_no_torchvision_warning(tiny_model_dir, tmp_path, step):
    """transformers warns that CLIPImageProcessor needs torchvision whenever diffusers' SVD pipeline
    module is first imported without it; the toolkit imports it quietly, both where a built-in
    model is written and where the clip_preprocess network runs (each in a fresh process: the
    warning is printed once per process)."""
    code = {
        "write": "from networks.models import _tiny_configs, write_random_model\n"
                 f"write_random_model({str(tmp_path / 'model')!r}, _tiny_configs())\n",
        "run": "import torch, runtime.generate, export.onnx, training.data\n"
               "from networks.models import load_model; from networks.wrappers import build_network\n"
               f"model = load_model({str(tiny_model_dir)!r})\n"
               "build_network('clip_preprocess', model)(torch.zeros(8, 8, 3, dtype=torch.uint8))\n",
    }[step]
    env = {"SFV_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torchvision" not in out.stderr
