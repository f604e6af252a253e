"""Engine cache keys, reuse decisions, manifest records and the machine check (no TensorRT needed).

The machine (TensorRT version, GPU) is given as a :class:`MachineInfo` value; plan files are
byte strings on disk: the cache logic only hashes and compares them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from contract.bundle import Bundle, sha256_file
from contract.errors import BackendUnavailableError, BundleError, EngineCacheError
from export.trt import build_engines, plan_job, record_engine
from export.trt_build import BuildOptions
from engines.trt_cache import (
    KEY_FIELDS,
    MachineInfo,
    cache_key,
    check_loadable,
    key_mismatches,
    lookup,
    missing_requirements,
    require_gpu_and_tensorrt,
)
from contract.specs import NETWORKS
from contract.trt_profiles import default_ranges, resolve_ranges

H100 = MachineInfo(tensorrt_version="11.4.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
A100 = MachineInfo(tensorrt_version="11.4.0", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
PROFILE = {"sample": {"min": [1, 1, 8, 4, 4], "opt": [1, 14, 8, 8, 8], "max": [2, 25, 8, 8, 8]}}


@pytest.fixture(scope="module")
def fp16_bundle_dir(tiny_bundle, tmp_path_factory):
    """The tiny bundle with its fp16 graph variants (written once per module)."""
    from export.variants import add_variants

    root = tmp_path_factory.mktemp("fp16") / "bundle"
    shutil.copytree(tiny_bundle, root)
    add_variants(Bundle.load(root), ["fp16"])
    return root


@pytest.fixture
def bundle(fp16_bundle_dir, tmp_path):
    """A private copy of the tiny bundle with fp16 variants (tests write engines into its manifest)."""
    root = tmp_path / "bundle"
    shutil.copytree(fp16_bundle_dir, root)
    return Bundle.load(root)


def _fake_build(bundle, job, payload=b"plan bytes"):
    """Stand in for TensorRT: put bytes where the plan goes, then record it as build_job does."""
    (bundle.root / job.plan_file).write_bytes(payload)
    return record_engine(bundle, job, default_ranges(bundle.config), BuildOptions(precision=job.precision), 1.0)


def test_cache_key_fields():
    key = cache_key("ab" * 32, H100, "fp16", PROFILE)
    assert tuple(key) == KEY_FIELDS
    assert key["tensorrt_version"] == "11.4.0"
    assert key["gpu_name"] == "NVIDIA H100 80GB HBM3" and key["compute_capability"] == "9.0"
    assert key["profile"] == PROFILE
    assert json.loads(json.dumps(key)) == key  # plain JSON for the manifest


def test_key_mismatches_name_each_field():
    a = cache_key("00" * 32, H100, "fp16", PROFILE)
    assert key_mismatches(a, dict(a)) == []
    b = cache_key("11" * 32, A100, "fp32", {"sample": {**PROFILE["sample"], "max": [2, 14, 8, 8, 8]}})
    diffs = key_mismatches(a, b)
    assert len(diffs) == 5
    text = " ".join(diffs)
    for word in ("onnx_sha256", "gpu_name", "compute_capability", "precision", "profile", "A100", "H100"):
        assert word in text


def test_lookup_reuses_only_a_matching_existing_plan(tmp_path):
    key = cache_key("00" * 32, H100, "fp16", PROFILE)
    (tmp_path / "unet.fp16.plan").write_bytes(b"plan")
    entry = {"file": "unet.fp16.plan", "cache_key": key, "sha256": sha256_file(tmp_path / "unet.fp16.plan")}
    assert lookup(tmp_path, entry, key).reuse
    assert not lookup(tmp_path, None, key).reuse
    other_gpu = cache_key("00" * 32, A100, "fp16", PROFILE)
    decision = lookup(tmp_path, entry, other_gpu)
    assert not decision.reuse and "A100" in decision.reason
    (tmp_path / "unet.fp16.plan").write_bytes(b"changed")
    decision = lookup(tmp_path, entry, key)
    assert not decision.reuse and "sha256" in decision.reason
    (tmp_path / "unet.fp16.plan").unlink()
    decision = lookup(tmp_path, entry, key)
    assert not decision.reuse and "missing" in decision.reason


def test_check_loadable_refuses_another_machine():
    key = cache_key("00" * 32, H100, "fp16", PROFILE)
    check_loadable(key, H100, "b/unet.fp16.plan")  # same machine: fine
    with pytest.raises(EngineCacheError) as info:
        check_loadable(key, A100, "b/unet.fp16.plan")
    msg = str(info.value)
    assert "H100" in msg and "A100" in msg and "compute_capability" in msg
    assert "python -m export.trt --bundle b" in msg
    newer = MachineInfo("11.5.0", H100.gpu_name, H100.compute_capability)
    with pytest.raises(EngineCacheError, match="tensorrt_version: engine '11.4.0', here '11.5.0'.*--fp16"):
        check_loadable(key, newer, "b/unet.fp16.plan")


def test_plan_record_reuse_cycle(bundle):
    ranges = default_ranges(bundle.config)
    fp16 = BuildOptions(precision="fp16")
    job = plan_job(bundle, "unet", ranges, fp16, H100)
    assert not job.decision.reuse and job.decision.reason == "no engine recorded"
    assert job.plan_file == "unet.fp16.plan" and job.precision == "fp16" and job.onnx_path.name == "unet.fp16.onnx"
    # The key names the graph variant built from, not the fp32 graph.
    assert job.key["onnx_sha256"] == bundle.entry("unet")["variants"]["fp16"]["sha256"]
    assert job.key["onnx_sha256"] != bundle.variant("unet", "fp32")["sha256"]
    entry = _fake_build(bundle, job)

    # The manifest on disk holds the engine, in the agreed shape.
    saved = Bundle.load(bundle.root).manifest["engines"]["unet"]
    assert saved == entry
    assert saved["file"] == "unet.fp16.plan" and saved["precision"] == "fp16" and saved["onnx_file"] == "unet.fp16.onnx"
    assert saved["cache_key"] == job.key and saved["profile"]["inputs"] == job.profile
    assert saved["profile"]["ranges"]["frames"] == [1, 14, 25]
    assert saved["sha256"] == sha256_file(bundle.root / "unet.fp16.plan")
    assert bundle.variant("unet", "fp32")["file"] == "unet.onnx"  # graph entries untouched

    # Same request on the same machine: reuse. Another GPU, precision, profile or --force: rebuild.
    assert plan_job(bundle, "unet", ranges, fp16, H100).decision.reuse
    assert not plan_job(bundle, "unet", ranges, fp16, A100).decision.reuse
    assert not plan_job(bundle, "unet", ranges, BuildOptions(), H100).decision.reuse
    wider = resolve_ranges(bundle.config, {"frames": (1, 14, 30)})
    assert "profile" in plan_job(bundle, "unet", wider, fp16, H100).decision.reason
    assert plan_job(bundle, "unet", ranges, BuildOptions(precision="fp16", force=True), H100).decision.reason == "--force"


def test_rebuild_at_other_precision_replaces_the_plan(bundle):
    ranges = default_ranges(bundle.config)
    _fake_build(bundle, plan_job(bundle, "vae_decoder", ranges, BuildOptions(precision="fp16"), H100))
    first = bundle.manifest["engines"]["vae_decoder"]
    assert first["precision"] == "fp16" and first["onnx_file"] == "vae_decoder.fp16.onnx"

    job = plan_job(bundle, "vae_decoder", ranges, BuildOptions(), H100)
    assert not job.decision.reuse and job.plan_file == "vae_decoder.fp32.plan" and job.onnx_path.name == "vae_decoder.onnx"
    _fake_build(bundle, job)
    assert bundle.manifest["engines"]["vae_decoder"]["file"] == "vae_decoder.fp32.plan"
    assert not (bundle.root / "vae_decoder.fp16.plan").exists()  # the replaced plan is removed
    assert (bundle.root / "vae_decoder.fp32.plan").exists()


def test_int8_falls_back_to_fp16_for_networks_without_an_int8_graph(bundle):
    ranges = default_ranges(bundle.config)
    job = plan_job(bundle, "vae_decoder", ranges, BuildOptions(precision="int8"), H100)
    assert job.precision == "fp16" and job.plan_file == "vae_decoder.fp16.plan"
    del bundle.manifest["networks"]["vae_decoder"]["variants"]["fp16"]
    job = plan_job(bundle, "vae_decoder", ranges, BuildOptions(precision="fp8"), H100)
    assert job.precision == "fp32" and job.onnx_path.name == "vae_decoder.onnx"


def test_changed_graph_invalidates_the_engine(bundle):
    ranges = default_ranges(bundle.config)
    _fake_build(bundle, plan_job(bundle, "image_encoder", ranges, BuildOptions(precision="fp16"), H100))
    # A re-export writes a new fp16 graph and records its sha256: the engine is stale.
    variant = bundle.manifest["networks"]["image_encoder"]["variants"]["fp16"]
    graph = bundle.root / "image_encoder.fp16.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    variant["sha256"] = sha256_file(graph)
    decision = plan_job(bundle, "image_encoder", ranges, BuildOptions(precision="fp16"), H100).decision
    assert not decision.reuse and "ONNX graph variant changed" in decision.reason
    # A graph that does not match its recorded sha256 is refused before any build.
    variant["sha256"] = "ff" * 32
    with pytest.raises(BundleError, match="sha256"):
        plan_job(bundle, "image_encoder", ranges, BuildOptions(precision="fp16"), H100)


def test_build_engines_reuses_without_tensorrt(bundle):
    """With every engine cached, nothing is built, so nothing needs TensorRT."""
    ranges = default_ranges(bundle.config)
    for network in NETWORKS:
        _fake_build(bundle, plan_job(bundle, network, ranges, BuildOptions(precision="fp16"), H100))
    result = build_engines(bundle, None, ranges, BuildOptions(precision="fp16"), H100)
    assert result == {n: "reused" for n in ("image_encoder", "vae_encoder", "unet", "vae_decoder")}


@pytest.mark.skipif(not missing_requirements(), reason="TensorRT and a GPU are available here")
def test_this_machine_lacks_tensorrt_or_gpu():
    with pytest.raises(BackendUnavailableError) as info:
        require_gpu_and_tensorrt()
    msg = str(info.value)
    assert "missing here" in msg and "pip install '.[gpu]'" in msg and "NVIDIA" in msg
    for part in missing_requirements():
        assert part in msg


def test_missing_parts_are_named(monkeypatch):
    """Each missing piece of the GPU stack gets its own line (PyTorch decides whether a GPU is usable)."""
    import torch

    import contract.environment as tc

    have_trt = not any("tensorrt" in m for m in missing_requirements())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert missing_requirements() == ([] if have_trt else [m for m in missing_requirements() if "tensorrt" in m])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(tc, "nvidia_driver_present", lambda: True)
    assert any("a GPU visible to PyTorch" in m for m in missing_requirements())
    monkeypatch.setattr(tc, "nvidia_driver_present", lambda: False)
    text = " ".join(missing_requirements())
    assert "NVIDIA GPU and driver" in text and "visible to PyTorch" not in text
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in " ".join(missing_requirements())
