"""``python -m benchmarks.recipe`` and ``--recipe auto``: candidates measured on the bundle's own
calls, the fastest within the bound chosen, the clip checked end to end against fp32, the recipe
written beside the manifest with this CPU, and refused (with a warning) on another CPU.
Tiny bundle, real ONNX Runtime and OpenVINO, 14 frames."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import PIL.Image
import pytest

from benchmarks.recipe import choose_recipe, pick, ref_choice, run
from engines.factory import Choice
from engines.recipe import RECIPE, read_recipe, recipe_engines, this_cpu, write_recipe
from contract.bundle import Bundle
from contract.errors import BundleError

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False

DIMS = {"num_frames": 14, "height": 64, "width": 64}


@pytest.fixture(scope="module")
def measured(tiny_bundle, tmp_path_factory):
    """One recipe run on a copy of the tiny bundle (1 thread, one round each: numbers, not timings)."""
    root = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("recipe") / "bundle")
    result = run(root, frames=14, height=64, width=64, threads=[1], rounds=1, e2e_rounds=1,
                 backends=("onnxruntime", "openvino") if HAVE_OPENVINO else ("onnxruntime",))
    return root, result


def test_candidates_are_measured_against_fp32(measured):
    root, result = measured
    assert set(result["networks"]) == {"image_encoder", "vae_encoder", "unet", "vae_decoder"}
    for network, rows in result["networks"].items():
        engines = [r["choice"] for r in rows]
        assert engines[0] == "onnxruntime:fp32:1" and rows[0]["reference"] and rows[0]["rel_l2"] == 0.0, network
        if HAVE_OPENVINO:
            assert "openvino:fp32:1" in engines, network
            ov = next(r for r in rows if r["choice"] == "openvino:fp32:1")
            assert ov["rel_l2"] < 1e-4 and ov["speedup"] > 0, (network, ov)  # f32 equals ORT to float rounding
            bf16 = [r for r in rows if r["precision"] == "bf16"]
            if bf16:  # only where the CPU reports BF16
                assert 1e-4 < bf16[0]["rel_l2"] < 0.1, (network, bf16[0])
            else:
                assert any("openvino" in why for why in result["skipped"][network]), result["skipped"]


def test_recipe_is_within_the_bound_and_written_beside_the_manifest(measured):
    root, result = measured
    recipe = result["recipe"]
    for network, choice in recipe.items():
        row = next(r for r in result["networks"][network] if r["choice"] == choice)
        assert row["rel_l2"] <= result["max_rel_l2"], (network, row)
    e2e = result["end_to_end"]
    assert set(e2e["configs"]) == {"fp32/full", "recipe/full"}
    assert {"image_encoder", "vae_encoder", "unet", "vae_decoder", "total"} <= set(e2e["configs"]["recipe/full"])
    assert e2e["psnr_db"]["recipe/full vs fp32/full"] >= 30.0
    doc = json.loads((root / RECIPE).read_text())
    assert doc["cpu"] == this_cpu() and doc["cpu"]["model"]
    assert {n: f"{e['backend']}:{e['precision']}:{e['threads']}" for n, e in doc["engines"].items()} == recipe
    assert doc["measured"]["end_to_end"]["psnr_db"] == e2e["psnr_db"]
    assert not list(root.glob(".*tmp*")) and Bundle.load(root)  # atomic write; the bundle stays loadable


def test_recipe_auto_runs_it_here_and_refuses_it_elsewhere(measured, tmp_path, caplog, capsys):
    from runtime.generate import main

    root, result = measured
    assert {n: str(c) for n, c in recipe_engines("auto", root).items()} == result["recipe"]
    image = tmp_path / "in.png"
    PIL.Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype(np.uint8)).save(image)
    args = ["--bundle", str(root), "--image", str(image), "--frames", "14", "--height", "64", "--width", "64",
            "--steps", "1", "--max-guidance", "1", "--threads", "1"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--out", str(tmp_path / "a.npy"), "--recipe", "auto"]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"recipe {root / RECIPE} (chosen on this CPU)") for m in said), said
    for network, choice in result["recipe"].items():
        backend, precision, _ = choice.split(":")
        assert any(m.startswith(f"{network}: {backend} {precision}") for m in said), (network, said)

    # The same recipe from another CPU: a warning saying so, and the default engines run.
    other = tmp_path / "other.json"
    doc = json.loads((root / RECIPE).read_text())
    doc["cpu"] = {"model": "AMD EPYC 7B12", "flags": ["AVX2"]}
    other.write_text(json.dumps(doc))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*args, "--out", str(tmp_path / "b.npy"), "--recipe", str(other)]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any("was chosen on another CPU (AMD EPYC 7B12; AVX2)" in m and "benchmarks.recipe" in m for m in said), said
    assert "unet: onnxruntime fp32 (unet.onnx), 1 threads" in said and not any(": openvino" in m for m in said)
    assert recipe_engines(str(other), root) is None

    assert main([*args, "--out", str(tmp_path / "c.npy"), "--recipe", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "c.npy").exists()


def test_recipe_file_errors(tmp_path, tiny_bundle, caplog):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(BundleError, match="not a format-1 recipe"):
        read_recipe(bad)
    bad.write_text("{")
    with pytest.raises(BundleError, match="not readable JSON"):
        read_recipe(bad)
    with pytest.raises(BundleError, match="not a bundle"):
        write_recipe(tmp_path, {"unet": "onnxruntime"})
    with caplog.at_level(logging.WARNING):
        assert recipe_engines("auto", tiny_bundle) is None  # no recipe: the default engines, said once
    assert any("has no recipe" in r.getMessage() for r in caplog.records)


def test_pick_takes_the_fastest_within_the_bound():
    rows = [{"choice": "onnxruntime:fp32:2", "speedup": 1.0, "rel_l2": 0.0, "reference": True},
            {"choice": "onnxruntime:int8:2", "speedup": 2.6, "rel_l2": 0.2, "reference": False},
            {"choice": "openvino:bf16:2", "speedup": 2.0, "rel_l2": 0.02, "reference": False},
            {"choice": "openvino:fp32:2", "speedup": 1.03, "rel_l2": 1e-6, "reference": False},
            {"choice": "openvino:int8:2", "error": "cannot compile"}]
    assert pick(rows, 0.15)["choice"] == "openvino:bf16:2"
    assert pick(rows, 0.25)["choice"] == "onnxruntime:int8:2"
    assert pick(rows, 0.01)["choice"] == "onnxruntime:fp32:2"  # a 3% gain is noise: the reference stays
    assert pick(rows, 0.15, exclude=["openvino:bf16:2"])["choice"] == "onnxruntime:fp32:2"


def test_quality_bound_sends_networks_back_to_fp32(measured):
    """A PSNR bound only identical frames meet: every lossy choice falls back, the worst first, to ORT fp32."""
    root, result = measured
    image = (np.random.RandomState(3).rand(64, 64, 3) * 255).astype(np.uint8)
    lossy = {"vae_decoder": [{"choice": "onnxruntime:fp32:1", "speedup": 1.0, "rel_l2": 0.0, "reference": True},
                             {"choice": "openvino:fp32:1", "speedup": 3.0, "rel_l2": 1e-6, "reference": False}],
             "unet": [{"choice": "onnxruntime:fp32:1", "speedup": 1.0, "rel_l2": 0.0, "reference": True},
                      {"choice": "openvino:fp32:1", "speedup": 3.0, "rel_l2": 2e-6, "reference": False}]}
    if not HAVE_OPENVINO:
        pytest.skip("needs OpenVINO for a second engine")
    engines, history = choose_recipe(Bundle.load(root), lossy, image, DIMS, 1, 0.15, min_psnr=150.0)
    assert engines == {"vae_decoder": ref_choice(1), "unet": ref_choice(1)} and engines["unet"] == Choice("onnxruntime", "fp32", 1)
    assert [list(h["engines"].values()) for h in history][0] == ["openvino:fp32:1", "openvino:fp32:1"]
    assert history[1]["engines"]["unet"] == "onnxruntime:fp32:1"  # the larger error went first
    assert history[-1]["psnr_db"] >= 150.0


def test_per_stage_times_the_recipe_network_by_network(measured):
    from benchmarks.recipe import format_per_stage, per_stage

    root, result = measured
    got = per_stage(root, ["vae_decoder"], frames=14, height=64, width=96, decode_chunk=7, rounds=1)
    rows = got["networks"]["vae_decoder"]
    assert [r["choice"] for r in rows] == [result["recipe"]["vae_decoder"]] and rows[0]["calls_per_clip"] == 2
    assert rows[0]["reference_seconds"] > 0 and rows[0]["rel_l2"] <= result["max_rel_l2"]
    assert f"| vae_decoder | {result['recipe']['vae_decoder']} |" in format_per_stage(got)


def test_speedup_table_has_the_recipe_row():
    from benchmarks.workload import RunConfig

    rc = RunConfig.parse("sfvrecipe-1")
    assert rc.label == "SF-V, best CPU recipe" and rc.decoder == "full" and not rc.guidance
    assert rc.pipeline_kwargs()["steps"] == 1 and rc.pipeline_kwargs()["max_guidance"] == 1.0
