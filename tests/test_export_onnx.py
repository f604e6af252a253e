"""ONNX export of the tiny model: manifest contents, parity at other shapes, subsets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from contract.bundle import Bundle, sha256_file
from networks.wrappers import build_network
from contract.specs import NETWORKS, build_specs, expand_dims
from export.validate import ort_session

# Shapes none of the default validation shapes use: batch 3, odd frame counts, other resolutions.
OTHER_DIMS = [
    {"batch": 2, "frames": 5, "height": 48, "width": 80},
    {"batch": 3, "frames": 9, "height": 80, "width": 32},
]


def test_bundle_has_validated_networks(tiny_bundle, tiny_model):
    bundle = Bundle.load(tiny_bundle)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert bundle.networks == ["clip_preprocess", *NETWORKS]
    specs = build_specs(tiny_model.config)
    for name in bundle.networks:
        entry = manifest["networks"][name]
        assert list(entry["variants"]) == ["fp32"] and bundle.precisions(name) == ["fp32"]
        variant = entry["variants"]["fp32"]
        path = tiny_bundle / variant["file"]
        assert variant["file"] == f"{name}.onnx" and path.is_file()
        assert variant["external_data"] is None
        assert variant["sha256"] == sha256_file(path)
        assert variant["bytes"] == path.stat().st_size
        assert variant["fp32_ops"] == []
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == specs[name].to_json()
        graph = onnx.load(str(path))
        assert variant["nodes"] == len(graph.graph.node) > 0
        assert entry["parameters"] == sum(p.numel() for p in build_network(name, tiny_model).parameters())
        assert [i.name for i in graph.graph.input] == specs[name].input_names
        assert [o.name for o in graph.graph.output] == specs[name].output_names
        assert len(variant["validation"]) >= 2
        for result in variant["validation"]:
            assert set(result) == {"dims", "max_abs", "max_rel", "atol", "passed"}
            assert result["passed"] and result["max_abs"] <= result["atol"] == specs[name].atol
        bundle.verify(name)
    export = manifest["export"]
    assert export["opset"] == 17 and "dynamo=False" in export["exporter"]
    assert set(export["versions"]) >= {"torch", "onnx", "onnxruntime", "diffusers", "transformers", "polygraphy"}
    assert all(export["versions"][k] for k in ("torch", "onnx", "onnxruntime", "polygraphy"))
    # Validated at batch 1 and 2, several frame counts and a non-square resolution.
    dims = manifest["networks"]["unet"]["variants"]["fp32"]["validation"]
    assert {d["dims"]["batch"] for d in dims} >= {1, 2}
    assert {d["dims"]["frames"] for d in dims} >= {8, 14, 25}
    assert any(d["dims"]["height"] != d["dims"]["width"] for d in dims)


def test_dynamic_axes_are_symbolic(tiny_bundle):
    graph = onnx.load(str(tiny_bundle / "unet.onnx"), load_external_data=False)
    sample = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in sample] == ["batch", "frames", 8, "latent_height", "latent_width"]


@pytest.mark.parametrize("name", NETWORKS)
def test_parity_at_shapes_not_exported_or_validated(tiny_bundle, tiny_model, name):
    """The graph traced at batch 1, 3 frames, 64x64 runs at other batch/frame/resolution values."""
    manifest = Bundle.load(tiny_bundle).manifest
    assert manifest["export"]["sample_dims"] == {"batch": 1, "frames": 3, "height": 64, "width": 64}
    spec = build_specs(tiny_model.config)[name]
    net = build_network(name, tiny_model)
    session = ort_session(tiny_bundle / f"{name}.onnx")
    for dims in OTHER_DIMS:
        inputs = spec.sample_inputs(expand_dims(dims, tiny_model.config), tiny_model.config, seed=1)
        with torch.no_grad():
            want = net(*(torch.from_numpy(inputs[n]) for n in spec.input_names)).numpy()
        (got,) = session.run(None, inputs)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= spec.atol, dims


def test_unet_traced_at_batch_1_runs_at_batch_2_with_cfg_layout(tiny_bundle, tiny_model):
    """CFG doubles the batch: an unconditional and a conditional half must stay independent."""
    spec = build_specs(tiny_model.config)["unet"]
    inputs = spec.sample_inputs(expand_dims({"batch": 2, "frames": 14, "height": 64, "width": 64}, tiny_model.config), tiny_model.config)
    session = ort_session(tiny_bundle / "unet.onnx")
    (both,) = session.run(None, inputs)
    (second,) = session.run(None, {k: v[1:] for k, v in inputs.items()})
    assert both.shape == (2, 14, 4, 8, 8)
    np.testing.assert_allclose(both[1:], second, atol=1e-5)


def test_subset_export_keeps_other_entries(tiny_bundle, tiny_model, tmp_path):
    from export.onnx import export_bundle

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = json.loads((out / "manifest.json").read_text())
    bundle = export_bundle(tiny_model, out, networks=["vae_encoder"], validate_dims=[{"batch": 2, "height": 32, "width": 48}])
    after = json.loads((out / "manifest.json").read_text())
    assert bundle.networks == ["clip_preprocess", *NETWORKS]
    for name in ("clip_preprocess", "image_encoder", "unet", "vae_decoder"):
        assert after["networks"][name] == before["networks"][name]
    (result,) = after["networks"]["vae_encoder"]["variants"]["fp32"]["validation"]
    assert result["dims"] == {"batch": 2, "height": 32, "width": 48} and result["passed"]
    assert after["networks"]["vae_encoder"]["variants"]["fp32"]["sha256"] == sha256_file(out / "vae_encoder.onnx")
    assert not list(out.glob(".export-*"))
