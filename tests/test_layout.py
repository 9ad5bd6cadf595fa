"""The layout holds: the library (core/) imports neither the engine (graph/) nor the nodes, the engine names
neither, and node files hold declarations whose run() is glue around the library."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import REPO

IMPORT_ALL = """
import importlib, pkgutil, sys
root = importlib.import_module({package!r})
for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
    importlib.import_module(info.name)
bad = sorted(m for m in sys.modules if m.startswith({prefix!r}) and m.split(".")[{depth}] in ("graph", "nodes"))
print(len([m for m in sys.modules if m.startswith({package!r})]), bad)
"""


@pytest.mark.parametrize(("package", "prefix", "depth"),
                         [("core", "", 0), ("comfyui_genart.core", "comfyui_genart.", 1)],
                         ids=["from the repository root", "installed name"])
def test_layout_library_imports_neither_graph_nor_nodes(package, prefix, depth):
    """Every module of the library, imported in a fresh interpreter, loads no module of graph/ or nodes/."""
    code = IMPORT_ALL.format(package=package, prefix=prefix, depth=depth)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, bad = proc.stdout.split(" ", 1)
    assert int(count) >= 25, "the walk found the library's modules"
    assert bad.strip() == "[]", f"importing the library pulled in: {bad}"


def relative_imports(path):
    tree = ast.parse(path.read_text())
    return [(node.lineno, node.level, node.module or "") for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level > 0]


def test_layout_dependency_direction():
    """nodes -> graph, nodes -> core; graph and core never import each other or nodes."""
    for folder, forbidden in (("core", ("graph", "nodes")), ("graph", ("core", "nodes"))):
        for path in sorted((REPO / folder).rglob("*.py")):
            root_level = len(path.relative_to(REPO).parts)  # dots that reach the pack root from this file
            for line, level, module in relative_imports(path):
                assert level <= root_level, f"{path.relative_to(REPO)}:{line} climbs above the pack"
                if level == root_level:
                    top = module.split(".")[0]
                    assert top not in forbidden, f"{path.relative_to(REPO)}:{line} imports {'.' * level}{module}"


def _is_node_class(node: ast.ClassDef, node_classes: set[str]) -> bool:
    names = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases}
    return bool(names & ({"Node", "NodeOutputs", "Outputs"} | node_classes))


def test_layout_node_files_hold_declarations_and_glue():
    """No models, no training or sampling loops, no other classes: nodes/ declares, the library computes."""
    # A node may extend another module's node (GenArt Sample Latent + Attention extends Sample Latent).
    node_classes = {n.name for path in (REPO / "nodes").glob("*.py") for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id == "Node" for b in n.bases)}
    for path in sorted((REPO / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        declared: set[str] = set(node_classes)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert _is_node_class(node, declared), f"{path.name}: class {node.name} is not a Node or its outputs"
                declared.add(node.name)
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("backward", "zero_grad", "optim"), \
                    f"{path.name}:{node.lineno}: .{node.attr}: training belongs in the library"
            if isinstance(node, (ast.For, ast.While)):
                steps = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                         and n.func.attr == "step"]
                assert not steps, f"{path.name}:{node.lineno}: a loop of .step() calls belongs in the library"
