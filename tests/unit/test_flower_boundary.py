"""Nodes never import Flower: the trainers are the node's own numpy code (DESIGN.md, Modelling)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_node_module_imports_flwr() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("nodes", "privacy", "protocols")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "flwr" in _imports(path)
    ]
    assert not offenders, f"node-side modules import flwr: {offenders}"


def test_a_node_process_loads_no_flwr() -> None:
    # The daemon and every trainer, imported as a node process imports them.
    code = (
        "import sys, nodes.daemon, nodes.trainers.sgd; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flwr'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
