"""Full-size SVD UNet export (1.5 B parameters, external data). Slow: minutes and ~9 GB of disk."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_full_size_unet_exports_with_external_data(tmp_path):
    from contract.bundle import Bundle
    from export.onnx import export_bundle

    bundle = export_bundle("svd-random", tmp_path, networks=["unet"])
    entry = Bundle.load(tmp_path).entry("unet")
    assert bundle.networks == ["unet"]
    assert entry["parameters"] > 1_500_000_000
    assert entry["external_data"] == "unet.onnx.data"
    data = tmp_path / "unet.onnx.data"
    assert data.stat().st_size > 2**31  # weights alone exceed the 2 GB protobuf limit
    assert (tmp_path / "unet.onnx").stat().st_size < 50_000_000  # graph only
    assert entry["bytes"] == data.stat().st_size + (tmp_path / "unet.onnx").stat().st_size
    assert {r["dims"]["batch"] for r in entry["validation"]} == {1, 2}
    assert all(r["passed"] for r in entry["validation"])
    bundle.verify("unet")
