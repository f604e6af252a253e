"""A failed or interrupted export leaves no empty ``--out`` directory behind (an existing one stays)."""

from __future__ import annotations

import pytest

from export.onnx import export_bundle


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_export_removes_the_out_directories_it_created(tiny_model, tmp_path, monkeypatch, error):
    import export.onnx as exporter

    def failing_export_network(*args, **kwargs):
        raise error

    monkeypatch.setattr(exporter, "export_network", failing_export_network)
    with pytest.raises(type(error)):
        export_bundle(tiny_model, tmp_path / "new" / "bundle", networks=["vae_encoder"], validate_dims=[])
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(type(error)):
        export_bundle(tiny_model, existing, networks=["vae_encoder"], validate_dims=[])
    assert existing.is_dir() and list(existing.iterdir()) == []
