"""One registry of rules: every rule string the code base raises is listed, and the docs show it."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from protocols.errors import FederationError
from protocols.rules import RULE_NAME, RULES, markdown_table

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "nodes", "coordinator", "privacy", "protocols")
# Names under which a rule string is stored or passed.
RULE_NAMES = {"rule", "RULE", "default_rule", "error_rule"}


def _trees() -> Iterator[tuple[Path, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path, ast.parse(path.read_text(), filename=str(path))


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _rule_positions(
    trees: list[tuple[Path, ast.AST]],
) -> tuple[dict[str, set[int]], dict[tuple[Path, str], set[int]]]:
    """Callable name -> positional index of its ``rule`` parameter (functions, methods, classes),
    and the same per (file, name) for private functions, which only their own file calls."""
    positions: dict[str, set[int]] = defaultdict(set)
    private: dict[tuple[Path, str], set[int]] = defaultdict(set)
    bases: dict[str, list[str]] = {}
    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                params = [a.arg for a in node.args.posonlyargs + node.args.args]
                params = params[1:] if params[:1] in (["self"], ["cls"]) else params
                if "rule" in params:
                    if node.name.startswith("_") and not node.name.startswith("__"):
                        private[(path, node.name)].add(params.index("rule"))
                    else:
                        positions[node.name].add(params.index("rule"))
            elif isinstance(node, ast.ClassDef):
                bases[node.name] = [_name(b) for b in node.bases]
                init = next(
                    (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
                )
                if init is not None:
                    params = [a.arg for a in init.args.args][1:]
                    if "rule" in params:
                        positions[node.name].add(params.index("rule"))
    for _ in range(8):  # a class without its own __init__ takes its base's
        for cls, parents in bases.items():
            if cls not in positions:
                for parent in parents:
                    positions[cls] |= positions.get(parent, set())
    return positions, private


def rule_strings() -> dict[str, list[str]]:
    """Every string literal the sources pass or assign as a rule, with where it occurs."""
    trees = list(_trees())
    positions, private = _rule_positions(trees)
    found: dict[str, list[str]] = defaultdict(list)
    for path, tree in trees:
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg in RULE_NAMES and (text := _text(kw.value)):
                        found[text].append(f"{where}:{node.lineno}")
                callee = _name(node.func)
                for i in private.get((path, callee)) or positions.get(callee, ()):
                    if i < len(node.args) and (text := _text(node.args[i])):
                        found[text].append(f"{where}:{node.lineno}")
            elif isinstance(node, ast.FunctionDef):
                args = node.args.posonlyargs + node.args.args
                for arg, default in zip(
                    args[len(args) - len(node.args.defaults) :], node.args.defaults, strict=True
                ):
                    if arg.arg == "rule" and (text := _text(default)):
                        found[text].append(f"{where}:{node.lineno}")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_name(t) in RULE_NAMES for t in targets) and (text := _text(node.value)):
                    found[text].append(f"{where}:{node.lineno}")
    return found


def test_every_rule_in_the_code_base_is_registered() -> None:
    found = rule_strings()
    assert len(found) > 100, "the scan finds the rules the code raises"
    missing = {rule: places[:3] for rule, places in found.items() if rule not in RULES}
    assert not missing, f"register these rules in protocols/rules.py: {missing}"


def test_the_scan_sees_each_way_a_rule_is_given() -> None:
    found = rule_strings()
    # positional (FederationError and subclasses), keyword (rule=...), class default, constant
    for rule in ("unsupported_job", "tls_required", "audit_unavailable", "differencing", "set_too_small"):
        assert rule in found, rule


def test_rule_names_are_identifiers() -> None:
    bad = [rule for rule in RULES if not RULE_NAME.fullmatch(rule)]
    assert not bad


def test_docs_list_every_rule() -> None:
    security = (ROOT / "docs" / "security.md").read_text()
    unlisted = [rule for rule in RULES if f"| `{rule}` |" not in security]
    assert not unlisted, (
        f"docs/security.md lacks rows for {unlisted}; `python -m protocols.rules` prints the table"
    )
    for row in markdown_table().splitlines()[2:]:
        assert row.count("|") == 4


def test_every_error_class_derives_from_the_one_root() -> None:
    from federation.scenario import ScenarioError
    from nodes.audit import AuditError
    from protocols.identity import PkiError
    from protocols.secagg_errors import SecAggError

    for cls in (AuditError, PkiError, SecAggError, ScenarioError):
        assert issubclass(cls, FederationError), cls


def test_cli_prints_one_line_naming_the_rule(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "absent.toml"
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "budget", "show", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert "[rule: config_missing]" in done.stderr
