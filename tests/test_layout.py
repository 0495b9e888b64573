"""The house's shape: which folder may import which, no import cycle, no file grown past its size.

The product's modules sit in layers, from the network up to the entry points (LAYERS). A module
imports only from its own package or from a lower layer, so the structure drawing has no upward
arrow and no loop; imports inside functions count too (a lazy import is still a dependency).
bench/ and tests/ sit above everything and nothing of the product imports them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

# Lower number = lower layer. A package's modules share its layer.
LAYERS = {"model": 0, "imaging": 1, "modelrepo": 2, "explain": 3, "training": 4, "dashboard": 4,
          "space_config": 4, "app": 5, "train": 5}
MAX_LINES = 450
PRODUCT = [p for p in REPO.rglob("*.py") if p.relative_to(REPO).parts[0] in {f"{k}.py" for k in LAYERS} | set(LAYERS)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    known = {module_name(p) for p in PRODUCT}
    return {n for n in names if n in known and n != module_name(path)}


def package(module: str) -> str:
    return module.split(".")[0]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imported(p) for p in PRODUCT}


def test_the_layer_table_covers_every_product_module():
    assert {package(m) for m in graph()} == set(LAYERS)
    assert not (REPO / "preprocess.py").exists() and not (REPO / "ood.py").exists()


def test_no_import_points_up_or_across_a_layer():
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps
              if package(d) != package(m) and LAYERS[package(d)] >= LAYERS[package(m)]]
    assert not upward, f"imports that point up or across: {upward}"


def test_no_import_cycle():
    g, state, cycles = graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_model_py_needs_torch_and_safetensors_only():
    tree = ast.parse((REPO / "model.py").read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    stdlib = {"__future__", "json", "math", "os", "stat", "dataclasses", "pathlib"}
    assert roots - stdlib <= {"torch", "safetensors"}, roots - stdlib


def test_no_module_forwards_names_through_getattr():
    shims = [str(p.relative_to(REPO)) for p in PRODUCT
             if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(p.read_text()).body)]
    assert not shims, f"module-level __getattr__ in {shims}"


@pytest.mark.parametrize("folder", ["", "bench", "tests", "explain", "imaging", "modelrepo", "training", "dashboard",
                                    "space_config"])
def test_no_python_file_is_longer_than_the_limit(folder):
    files = (REPO / folder).glob("*.py") if folder else REPO.glob("*.py")
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
