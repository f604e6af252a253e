"""Every import points down the floors of ``tests/layers.py``; no loop; no unexplained function-local import.

A failure names the file and line; ``python -m tests.layers`` prints the whole picture.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests import layers

STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@pytest.fixture(scope="module")
def project():
    return layers.project_imports()


def test_every_package_is_a_floor():
    packages = {p.parent.name for p in layers.ROOT.glob("*/__init__.py")}
    assert packages == set(layers.LAYERS), "add a new package to tests/layers.py LAYERS, at its floor"


def test_no_import_points_up(project):
    up = [f"{i.path}:{i.line} {i.source} imports {i.target}" for i in layers.upward(project)]
    assert not up, f"imports from a lower floor to a higher one ({' -> '.join(layers.LAYERS)}):\n" + "\n".join(up)


def test_no_import_loop(project):
    assert layers.loops(project) == []


def test_function_local_imports_say_why():
    bare = sorted({f"{i.path}:{i.line} {i.target}" for i in layers.local_imports() if not i.reason})
    assert not bare, (
        "import at module level, or, where the import keeps an optional dependency optional, "
        f"say which on the line above ('{layers.OPTIONAL_MARK} torch (the export extra)'):\n" + "\n".join(bare)
    )


def test_contract_needs_numpy_only(project):
    """The ground floor imports no third-party package but numpy at module level (the torch-free runtime stands on it)."""
    third_party = sorted(
        {f"{i.path}:{i.line} {i.target}" for p in layers.source_files() if p.parent.name == "contract"
         for i in layers.imports_of(p) if not i.local and i.package not in layers.LAYERS and i.package not in STDLIB
         and i.package != "numpy"}
    )
    assert not third_party


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The analysis sees an upward import, a loop and a bare local import in a throwaway tree."""
    for pkg in layers.LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "contract" / "low.py").write_text("import runtime.high\n")
    (tmp_path / "runtime" / "high.py").write_text(textwrap.dedent("""\
        import contract.low


        def f():
            import json
            # optional: torch (the export extra)
            import torch
            return json, torch
        """))
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    found = layers.project_imports(tmp_path)
    assert [(i.source, i.target) for i in layers.upward(found)] == [("contract.low", "runtime.high")]
    assert layers.loops(found) == [["contract.low", "runtime.high"]]
    assert [(i.target, i.reason) for i in layers.local_imports(tmp_path)] == [("json", False), ("torch", True)]
