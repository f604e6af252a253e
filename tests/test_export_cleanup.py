"""Clean-up: constant folding shrinks the graph without changing it, also with weights left on disk."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import torch
from onnx.external_data_helper import uses_external_data

from export.cleanup import cleanup, load_lean, load_weights
from networks.wrappers import build_network
from contract.specs import build_specs, expand_dims
from export.validate import ort_session


def _export_raw(tiny_model, directory):
    """The tiny VAE encoder as the exporter writes a > 2 GB model: one external file per tensor."""
    spec = build_specs(tiny_model.config)["vae_encoder"]
    net = build_network("vae_encoder", tiny_model)
    x = spec.sample_inputs(expand_dims({"batch": 1, "height": 64, "width": 64}, tiny_model.config), tiny_model.config)
    path = directory / "vae_encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x["image"]),), str(path), input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes(), opset_version=17, dynamo=False)
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    return net, spec, path


def test_lean_cleanup_matches_full_cleanup(tiny_model, tmp_path, monkeypatch):
    """Also: clean-up changes no process-wide state (it neither changes the working directory to
    find the external data nor leaves Polygraphy's logger severity changed)."""
    from polygraphy.logger import G_LOGGER

    net, spec, path = _export_raw(tiny_model, tmp_path)
    severity = G_LOGGER.module_severity.get()

    def no_chdir(path):
        raise AssertionError(f"library code changed the working directory to {path}")

    monkeypatch.setattr(os, "chdir", no_chdir)
    full = cleanup(onnx.load(str(path)))
    lean = load_lean(path, small_bytes=0)  # only what folding can use is read
    raw_nodes = len(lean.graph.node)
    on_disk = [t for t in lean.graph.initializer if uses_external_data(t)]
    assert any(len(t.dims) == 4 for t in on_disk)  # conv weights stay on disk
    lean = cleanup(lean, external_data_dir=tmp_path)
    assert len(lean.graph.node) == len(full.graph.node) < raw_nodes
    assert G_LOGGER.module_severity.get() == severity
    load_weights(lean, tmp_path)
    assert not any(uses_external_data(t) for t in lean.graph.initializer)

    out = tmp_path / "clean.onnx"
    onnx.save_model(lean, str(out))
    x = spec.sample_inputs(expand_dims({"batch": 2, "height": 48, "width": 80}, tiny_model.config), tiny_model.config)
    with torch.no_grad():
        want = net(torch.from_numpy(x["image"])).numpy()
    (got,) = ort_session(out).run(None, {"image": x["image"]})
    assert np.abs(got - want).max() < 1e-4
