"""The TensorRT-facing modules use no API that TensorRT 11 removed (read from their syntax tree).

NVIDIA's "Migrating from TensorRT 10.x to 11.x" removes every weak-typing API: the precision
builder flags, precision constraints, per-layer precision and output types, INT8 calibrators,
``platformHasFast*`` and the algorithm selector. Comments and docstrings may name them (to say
they are gone); code may not: attribute uses, keyword arguments, names, and strings handed to
``getattr``/``set_flag`` are all checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    "export/trt.py",
    "export/trt_build.py",
    "engines/trt_cache.py",
    "contract/trt_profiles.py",
    "engines/tensorrt_engine.py",
    "engines/factory.py",
)
# Attributes (BuilderFlag members, layer/config/builder members) removed in TensorRT 11.x.
REMOVED_ATTRIBUTES = {
    "FP16", "BF16", "INT8", "FP8", "INT4", "FP4",
    "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
    "precision", "precision_is_set", "reset_precision", "set_output_type", "get_output_type", "output_type_is_set",
    "reset_output_type", "int8_calibrator", "set_calibration_profile", "get_calibration_profile",
    "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32", "algorithm_selector",
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator", "CalibrationAlgoType", "IAlgorithmSelector",
}
# Keyword arguments of Polygraphy's loaders that turn those APIs on.
REMOVED_KEYWORDS = {"fp16", "bf16", "int8", "fp8", "precision_constraints", "calibrator", "algorithm_selector", "layer_precisions"}
# Polygraphy loaders that only apply removed APIs.
REMOVED_NAMES = {"SetLayerPrecisions", "Calibrator", "TacticRecorder", "TacticReplayer", "KeepLayersFp32"}
# Objects whose ``precision`` attribute is ours (the engine's/job's graph precision), not a TensorRT layer's.
OWN_PRECISION_OWNERS = {"self", "job", "options", "engine", "entry", "args", "choice", "c", "choices"}


def removed_api_uses(source: str, filename: str = "<source>") -> list[str]:
    """``"file:line: what"`` for every use of a removed TensorRT API in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in REMOVED_ATTRIBUTES:
            value = node.value.value if isinstance(node.value, ast.Subscript) else node.value  # choices[n].precision
            owner = value.id if isinstance(value, ast.Name) else None
            if node.attr == "precision" and owner in OWN_PRECISION_OWNERS:
                continue
            found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in REMOVED_NAMES:
            found.append(f"{where}: {node.id}")
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in REMOVED_KEYWORDS:
                    found.append(f"{where}: {kw.arg}=")
                if kw.arg == "strongly_typed" and isinstance(kw.value, ast.Constant) and kw.value.value is not True:
                    found.append(f"{where}: strongly_typed={kw.value.value!r}")
            func = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if func in ("getattr", "hasattr", "setattr", "set_flag", "clear_flag", "get_flag"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value in REMOVED_ATTRIBUTES:
                        found.append(f"{where}: {func}(..., {arg.value!r})")
        elif isinstance(node, (ast.ImportFrom,)) and any(a.name in REMOVED_NAMES for a in node.names):
            found.append(f"{where}: import of {', '.join(a.name for a in node.names if a.name in REMOVED_NAMES)}")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_api_removed_in_tensorrt_11(module):
    path = ROOT / module
    assert removed_api_uses(path.read_text(), module) == []


def test_networks_are_created_strongly_typed():
    tree = ast.parse((ROOT / "export/trt_build.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "NetworkFromOnnxPath"]
    assert calls, "export/trt_build.py no longer parses ONNX with NetworkFromOnnxPath"
    for call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("strongly_typed"), ast.Constant) and kw["strongly_typed"].value is True


@pytest.mark.parametrize(
    "snippet",
    [
        "CreateConfig(fp16=True, profiles=p)",
        "CreateConfig(int8=True, calibrator=c)",
        "CreateConfig(precision_constraints='obey')",
        "config.set_flag(trt.BuilderFlag.FP16)",
        "config.set_flag(getattr(trt.BuilderFlag, 'INT8'))",
        "layer.precision = trt.float32",
        "layer.set_output_type(0, trt.float32)",
        "config.int8_calibrator = calib",
        "ok = builder.platform_has_fast_fp16",
        "NetworkFromOnnxPath(path, strongly_typed=False)",
        "from polygraphy.backend.trt import Calibrator",
        "class C(trt.IInt8EntropyCalibrator2): pass",
    ],
)
def test_the_check_catches_each_removed_api(snippet):
    assert removed_api_uses(snippet)


def test_comments_and_own_precision_fields_are_not_flagged():
    ok = '"""BuilderFlag.FP16 was removed in 11.x."""\n# layer.precision = trt.float32\nx = job.precision\nself.precision = p\n'
    assert removed_api_uses(ok) == []
