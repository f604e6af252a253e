"""The C++ reader against ``contract/manifest.schema.json``: ``sfv-generate`` refuses every manifest
the schema rejects (tests/test_manifest_schema.py's cases), with a one-line error and no output, and
runs a bundle whose manifest the schema accepts.
"""

from __future__ import annotations

import json

import pytest

from contract.bundle import MANIFEST, SamplerConfig
from tests.test_cpp_runtime import ROOT, _cpp_error, _run, cpp_build, generate, image  # noqa: F401  (fixtures)
from tests.test_manifest_schema import BROKEN, broken, validator, write_bundle

pytestmark = pytest.mark.skipif(not (ROOT / "runtime" / "cpp" / "CMakeLists.txt").is_file(), reason="no C++ runtime")

CLIP = ["--frames", "3", "--steps", "1", "--max-guidance", "1", "--quiet"]


@pytest.mark.parametrize("case", list(BROKEN))
def test_cpp_reader_refuses_what_the_schema_rejects(generate, tiny_bundle, image, tmp_path, case):
    manifest = broken(json.loads((tiny_bundle / MANIFEST).read_text()), case)
    assert not validator().is_valid(manifest)
    out = tmp_path / "clip.npy"
    message = _cpp_error(generate, write_bundle(tiny_bundle, manifest, tmp_path / "b"), image, out, *CLIP)
    assert "re-export" in message and len(message.splitlines()) == 1, message
    assert not out.exists()


@pytest.mark.parametrize("sampler", [None, {"name": "euler"}, {"name": "lcm"}])
def test_cpp_reader_runs_what_the_schema_accepts(generate, tiny_bundle, image, tmp_path, sampler):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    if sampler is not None:
        manifest["sampler"] = SamplerConfig.builtin(sampler["name"]).to_json()
    validator().validate(manifest)
    out = tmp_path / "clip.npy"
    r = generate("--bundle", write_bundle(tiny_bundle, manifest, tmp_path / "b"), "--image", image, "--out", out, *CLIP)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
