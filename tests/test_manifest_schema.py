"""``contract/manifest.schema.json`` is the manifest's contract: the exporter's manifests pass it, the
Python reader refuses what it rejects, and it names the same networks, precisions, samplers and
config keys as the Python code (the C++ reader's side is tests/test_cpp_manifest.py).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from contract.bundle import FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_SCHEMA, PRECISIONS, SAMPLERS, Bundle, LCMParams, SamplerConfig
from contract.errors import BundleError
from contract.specs import NETWORKS, OPTIONAL_NETWORKS, PREPROCESS_NETWORKS, SYMBOLS, ModelConfig

jsonschema = pytest.importorskip("jsonschema")


def _drop(*path):
    def mutate(m):
        for key in path[:-1]:
            m = m[key]
        del m[path[-1]]
    return mutate


def _set(value, *path):
    def mutate(m):
        for key in path[:-1]:
            m = m[key]
        m[path[-1]] = value
    return mutate


def _lcm_without_rho(m):
    m["sampler"] = SamplerConfig.builtin("lcm").to_json()
    del m["sampler"]["params"]["rho"]


# Manifests the schema rejects, and every reader must refuse: (what is wrong, how to break a good one).
BROKEN = {
    "no format": _drop("format"),
    "format_version 1": _set(1, "format_version"),
    "no format_version": _drop("format_version"),
    "no networks": _drop("networks"),
    "no model.config": _drop("model", "config"),
    "no model.config.num_frames": _drop("model", "config", "num_frames"),
    "no model.config.steps": _drop("model", "config", "steps"),
    "no model.config.noise_aug_strength": _drop("model", "config", "noise_aug_strength"),
    "sampler with an unknown key": _set({"name": "euler", "speed": 2}, "sampler"),
    "unknown sampler": _set({"name": "ddim"}, "sampler"),
    "sampler steps 0": _set({"name": "euler", "steps": 0}, "sampler"),
    "lcm params without rho": _lcm_without_rho,
    "unet without variants": _drop("networks", "unet", "variants"),
    "unet without fp32 file": _drop("networks", "unet", "variants", "fp32", "file"),
    "vae_decoder without inputs": _drop("networks", "vae_decoder", "inputs"),
}


def schema() -> dict:
    return json.loads(MANIFEST_SCHEMA.read_text())


def validator():
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def broken(manifest: dict, case: str) -> dict:
    out = copy.deepcopy(manifest)
    BROKEN[case](out)
    return out


def write_bundle(good, manifest: dict, where):
    """A bundle directory at ``where`` with ``good``'s graphs (linked) and ``manifest``."""
    where.mkdir()
    for f in good.iterdir():
        if f.name != MANIFEST:
            (where / f.name).symlink_to(f)
    (where / MANIFEST).write_text(json.dumps(manifest))
    return where


def test_schema_names_what_the_code_names():
    s = schema()
    assert s["properties"]["format"]["const"] == FORMAT and s["properties"]["format_version"]["const"] == FORMAT_VERSION
    assert s["properties"]["networks"]["propertyNames"]["enum"] == [*PREPROCESS_NETWORKS, *NETWORKS, *OPTIONAL_NETWORKS]
    assert s["$defs"]["network"]["properties"]["variants"]["propertyNames"]["enum"] == list(PRECISIONS)
    assert s["$defs"]["sampler"]["properties"]["name"]["enum"] == list(SAMPLERS)
    config = s["$defs"]["model_config"]
    assert config["required"] == list(ModelConfig.__dataclass_fields__) == list(config["properties"])
    assert set(s["$defs"]["lcm_params"]["required"]) == {f.name for f in dataclasses.fields(LCMParams)}
    assert s["$defs"]["tensor"]["properties"]["shape"]["items"]["anyOf"][1]["enum"] == list(SYMBOLS)


def test_exported_manifests_pass(tiny_bundle):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    validator().validate(manifest)
    for name in ("euler", "lcm"):
        validator().validate({**manifest, "sampler": SamplerConfig.builtin(name).to_json()})


@pytest.mark.parametrize("case", list(BROKEN))
def test_schema_rejects(tiny_bundle, case):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert not validator().is_valid(broken(manifest, case))


@pytest.mark.parametrize("case", list(BROKEN))
def test_python_reader_refuses_what_the_schema_rejects(tiny_bundle, tmp_path, case):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    bundle = write_bundle(tiny_bundle, broken(manifest, case), tmp_path / "b")
    with pytest.raises(BundleError, match="re-export"):
        Bundle.load(bundle)
