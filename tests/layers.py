"""The toolkit's packages as floors, and the imports between them, read from the source with :mod:`ast`.

``LAYERS`` is the one statement of the order, ground floor first: a package may import its own
modules and those of the packages below it, never one above. Nothing is imported or run.

``python -m tests.layers`` prints the counts that ``tests/test_layers.py`` holds at zero: imports
that point up, import loops between modules, and function-local imports without an
``# optional: ...`` reason (the one kind allowed: it keeps a heavy dependency optional).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Ground floor first. contract: the numpy-only bundle contract; networks: the torch networks the
#: exporter, the torch backend and training share; then who runs them, who writes bundles, who trains,
#: who measures.
LAYERS = ("contract", "networks", "engines", "runtime", "export", "training", "serving", "benchmarks")

#: The mark that a function-local import keeps an optional heavy dependency optional.
OPTIONAL_MARK = "# optional:"


@dataclass(frozen=True)
class Import:
    """One imported project-or-other module: ``source`` imports ``target`` at ``path:line``."""

    source: str  # importing module, e.g. "runtime.pipeline"
    target: str  # imported module as written, absolute, e.g. "contract.specs" or "numpy"
    path: str  # file, relative to the root
    line: int
    local: bool  # inside a function
    reason: bool  # an "# optional: ..." comment on the statement or the line above it

    @property
    def package(self) -> str:
        return self.target.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path = ROOT) -> list[Path]:
    """The Python files of every package in :data:`LAYERS` (the C++ runtime's scripts are no package)."""
    return sorted(p for pkg in LAYERS for p in (root / pkg).rglob("*.py") if "cpp" not in p.relative_to(root).parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[Import]:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    module = module_name(path)
    rel = str(path.relative_to(ROOT))
    out: list[Import] = []

    def marked(node: ast.stmt) -> bool:
        span = lines[max(node.lineno - 2, 0): node.end_lineno]
        return any(OPTIONAL_MARK in line for line in span)

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend(Import(module, a.name, rel, child.lineno, local, marked(child)) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(module, child, path.name == "__init__.py")
                # "from pkg import mod" imports the module pkg.mod when it is one
                names = [f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in child.names]
                out.extend(Import(module, t, rel, child.lineno, local, marked(child)) for t in dict.fromkeys(names))
            else:
                visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def project_imports(root: Path = ROOT) -> list[Import]:
    """Every import of every package module whose target is a module of one of :data:`LAYERS`."""
    return [i for p in source_files(root) for i in imports_of(p) if i.package in LAYERS]


def upward(imports: list[Import]) -> list[Import]:
    """Imports from a package to one above it in :data:`LAYERS`."""
    floor = {name: n for n, name in enumerate(LAYERS)}
    return [i for i in imports if floor[i.package] > floor[i.source.split(".")[0]]]


def loops(imports: list[Import]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected components of two or more, Tarjan)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.target != i.source:
            graph.setdefault(i.source, set()).add(i.target)
            graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def local_imports(root: Path = ROOT) -> list[Import]:
    """Function-local import statements (one entry per imported module) of every package module."""
    return [i for p in source_files(root) for i in imports_of(p) if i.local]


def package_arrows(imports: list[Import]) -> set[tuple[str, str]]:
    return {(i.source.split(".")[0], i.package) for i in imports if i.source.split(".")[0] != i.package}


def main() -> int:
    project = project_imports()
    local = local_imports()
    up = upward(project)
    arrows = package_arrows(project)
    floor = {name: n for n, name in enumerate(LAYERS)}
    print("layers, ground floor first:", " -> ".join(LAYERS))
    print(f"package arrows: {len(arrows)}, pointing up: {sum(floor[b] > floor[a] for a, b in arrows)}")
    print(f"upward imports: {len(up)}")
    for i in up:
        print(f"  {i.path}:{i.line} {i.source} -> {i.target}")
    cycles = loops(project)
    print(f"import loops: {len(cycles)}")
    for group in cycles:
        print("  " + " <-> ".join(group))
    statements = {(i.path, i.line) for i in local}
    unmarked = sorted({(i.path, i.line, i.target) for i in local if not i.reason})
    print(f"function-local import statements: {len(statements)}, without an '{OPTIONAL_MARK}' reason: {len(unmarked)}")
    for path, line, target in unmarked:
        print(f"  {path}:{line} {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
