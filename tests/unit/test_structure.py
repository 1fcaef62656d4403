"""The code base's structure rules: each shared mechanism exists once, and no module reaches into
another's private names (docs/architecture.md, "Inside a node")."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from nodes.keys import load_or_create_differencing_key, load_or_create_secagg_key, load_or_create_seed
from protocols.errors import FederationError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "nodes", "coordinator", "privacy", "protocols")


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                out.append((str(path.relative_to(ROOT)), ast.parse(path.read_text())))
    return out


def _calls(tree: ast.AST, module: str, name: str) -> int:
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == module
    )


def test_sqlite_is_opened_in_one_place() -> None:
    places = [where for where, tree in _modules() if _calls(tree, "sqlite3", "connect")]
    assert places == ["privacy/store.py"]


def test_the_node_reaches_its_engines_in_one_place() -> None:
    places = [
        where
        for where, tree in _modules()
        if where.startswith("nodes/")
        and (_calls(tree, "duckdb", "connect") or _calls(tree, "psycopg", "connect"))
    ]
    # ``federation node check`` (nodes/check.py) opens each source once, before the node starts, to
    # report on it; it runs no job. Every job's SQL goes through nodes/sources.py, which opens
    # PostgreSQL itself and each file source's DuckDB through nodes/file_sources.py.
    assert places == ["nodes/check.py", "nodes/file_sources.py", "nodes/sources.py"]


def test_node_key_files_are_written_in_one_place() -> None:
    places = []
    for where, tree in _modules():
        # A key file is created exclusively (O_EXCL) and kept private (0600); logs are appended to.
        if where.startswith("nodes/") and any(
            isinstance(node, ast.Attribute) and node.attr == "O_EXCL" for node in ast.walk(tree)
        ):
            places.append(where)
    assert places == ["nodes/keys.py"]


def test_no_module_uses_another_modules_private_names() -> None:
    ours = set(PACKAGES)
    bad = []
    for where, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ours:
                bad += [f"{where}: import {a.name}" for a in node.names if a.name.startswith("_")]
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.endswith("_")  # dunders and IPython's _repr_html_ protocol
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and not (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super")
            ):
                bad.append(f"{where}:{node.lineno}: .{node.attr}")
    assert not bad, bad


def test_secret_seeds_are_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_differencing_key(tmp_path)
    assert load_or_create_differencing_key(tmp_path) == first and len(first) == 32
    secagg = load_or_create_secagg_key(tmp_path)
    assert secagg.private_bytes_raw() == load_or_create_secagg_key(tmp_path).private_bytes_raw()
    for name in ("differencing.key", "secagg_signing.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    os.chmod(tmp_path / "differencing.key", 0o644)
    with pytest.raises(FederationError) as info:
        load_or_create_differencing_key(tmp_path)
    assert info.value.rule == "differencing" and "readable by others" in info.value.message
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 7)
    short.chmod(0o600)
    with pytest.raises(FederationError, match="32-byte seed"):
        load_or_create_seed(short, "secagg_key_invalid")
