"""The package's structure: every module imports, no import circles, every arrow points down.

The layers, from the bottom: foundations (errors, io, devices, validation, reference); data,
models and results; analyzers; training; the studies; the runner and the reports; the command
line. A module may import its own layer and the layers below it, never one above.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [  # bottom first; a module belongs to the first prefix it matches, longest prefixes first
    ("probe.errors", "probe.io", "probe.devices", "probe.validation", "probe.reference"),
    ("probe.results", "probe.embeddings", "probe.verdict", "probe.estimators", "probe.critics", "probe.encoders",
     "probe.data", "probe.ground_truth", "probe.study"),
    ("probe.analyzers",),
    ("probe.training",),
    ("studies",),
    ("probe.runner", "probe.report"),
    ("probe.cli",),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("probe", "studies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every probe/studies module `name` imports, at module level or inside a function."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        return -1 if name == "probe" else -2
    return best[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_every_module_has_a_layer():
    assert [n for n in MODULES if _layer(n) == -2] == []


def test_no_import_points_up():
    upward = [f"{a} ({LAYERS[_layer(a)][0]}...) imports {b} ({LAYERS[_layer(b)][0]}...)"
              for a, targets in GRAPH.items() for b in targets
              if a != "probe" and b != "probe" and _layer(b) > _layer(a)]
    assert upward == []


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target.startswith(node + "."):  # a package's __init__ importing its own modules
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    assert _cycle() is None


def test_the_checks_can_fail(monkeypatch):
    """A circle and an upward import planted in the graph are found."""
    monkeypatch.setitem(GRAPH, "probe.errors", GRAPH["probe.errors"] | {"probe.cli.main"})
    assert _cycle() is not None
    with pytest.raises(AssertionError):
        test_no_import_points_up()


def test_modules_stay_readable():
    """One concern per module: none past 450 lines."""
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 450}
    assert long == {}
