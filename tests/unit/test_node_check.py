"""`federation node check` on real files: a CSV through DuckDB, a PostgreSQL table, a real PKI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation import pki
from federation.cli import app
from nodes.check import ERROR, WARNING, check_node
from nodes.config import load_node_config
from nodes.state_lock import StateLock
from protocols.errors import FederationError

ROWS = [
    # id, regio (local codes), jaar (shared values, no codes)
    *[(f"u{i}", "R01" if i % 2 else "R02", 2020 + i % 2) for i in range(40)],
    ("u40", "r01", 2020),  # lower-case code: maps to nothing
    ("u41", "R99", 2021),  # unknown code
    ("u42", "R99", 2019),  # unknown code and a year outside the domain
    ("u43", "", 2021),  # empty: missing, not unmapped
]


def _config(root: Path, *, node: str = "n1", kit: str = "n1", regio: str = "regio", extra: str = "") -> Path:
    return _write(
        root / f"{node}-{uuid.uuid4().hex[:6]}.toml",
        f"""
[node]
id = "{node}"
tls_dir = "pki/kits/{kit}"
state_dir = "state-{node}"
{extra}
[[datasets]]
name = "cases"
privacy_unit = "unit"
[datasets.source]
kind = "csv"
path = "cases.csv"
[[datasets.columns]]
name = "unit"
local = "id"
kind = "identifier"
[[datasets.columns]]
name = "region"
local = "{regio}"
kind = "category"
domain = ["North", "South"]
codes = {{ R01 = "North", R02 = "South" }}
[[datasets.columns]]
name = "year"
local = "jaar"
kind = "category"
domain = [2020, 2021]
""",
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    pki.init_root(tmp_path / "pki")
    pki.issue(tmp_path / "pki", "n1", "node", org="n1")
    pki.issue(tmp_path / "pki", "n2", "node", org="n2")
    pki.issue(tmp_path / "pki", "ana", "analyst", org="n1")
    lines = ["id,regio,jaar", *(f"{a},{b},{c}" for a, b, c in ROWS)]
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    yield tmp_path


def _run(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["node", "check", "--config", str(config)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_clean_config_passes_and_counts_unmapped_values_per_column(root: Path) -> None:
    findings = check_node(load_node_config(_config(root)))
    assert not [f for f in findings if f.level == ERROR], findings
    warned = {f.message for f in findings if f.level == WARNING and f.rule == "unmapped_values"}
    assert warned == {
        "column region: 3 row(s) with a value outside the domain fall in no group",
        "column year: 1 row(s) with a value outside the domain fall in no group",
    }
    code, output = _run(_config(root))
    assert code == 0, output
    assert "unmapped_values" in output and "0 error(s), 2 warning(s)" in output


def test_typo_in_a_local_column_is_an_error_naming_the_column(root: Path) -> None:
    code, output = _run(_config(root, regio="regoi"))
    assert code == 1
    assert "unknown_local_column" in output and "'regoi' not found" in output
    assert "Traceback" not in output


def test_missing_source_file_is_an_error(root: Path) -> None:
    (root / "cases.csv").unlink()
    code, output = _run(_config(root))
    assert code == 1 and "source_unavailable" in output


def test_group_readable_key_is_refused(root: Path) -> None:
    os.chmod(root / "pki" / "kits" / "n1" / "key.pem", 0o640)
    code, output = _run(_config(root))
    assert code == 1 and "key_permissions" in output and "mode 0640" in output


def test_world_readable_audit_key_is_refused(root: Path) -> None:
    key = root / "audit.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    code, output = _run(_config(root, extra=f'audit_signing_key = "{key}"'))
    assert code == 1 and "key_permissions" in output


def test_certificate_of_another_node_is_refused(root: Path) -> None:
    code, output = _run(_config(root, kit="n2"))
    assert code == 1 and "wrong_identity" in output and "names 'n2'" in output


def test_certificate_of_another_role_is_refused(root: Path) -> None:
    code, output = _run(_config(root, node="ana", kit="ana"))
    assert code == 1 and "wrong_role" in output


def test_revoked_certificate_is_refused_when_the_kit_holds_the_new_crl(root: Path) -> None:
    config = _config(root)
    assert _run(config)[0] == 0
    pki.revoke(root / "pki", "n1", "key_compromise")
    kit_crl = root / "pki" / "kits" / "n1" / "crl.pem"
    kit_crl.write_bytes((root / "pki" / "crl.pem").read_bytes())
    code, output = _run(config)
    assert code == 1 and "revoked" in output


def test_no_tls_and_not_insecure_is_an_error(root: Path) -> None:
    text = _config(root).read_text().replace('tls_dir = "pki/kits/n1"', "")
    code, output = _run(_write(root / "plain.toml", text))
    assert code == 1 and "tls_required" in output


def test_postgres_table_typo_is_an_error(root: Path, postgres_dsn: str) -> None:
    import psycopg

    table = f"check_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id TEXT, regio TEXT, jaar INTEGER)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", ROWS)
    try:
        text = _config(root).read_text()
        source = f'kind = "postgres"\ndsn = "{postgres_dsn}"\ntable = "public.{table}"'
        good = _write(root / "pg.toml", text.replace('kind = "csv"\npath = "cases.csv"', source))
        findings = check_node(load_node_config(good))
        assert not [f for f in findings if f.level == ERROR], findings
        assert sum(f.rule == "unmapped_values" for f in findings) == 2
        bad = _write(root / "pg-typo.toml", good.read_text().replace(f"public.{table}", f"public.{table}x"))
        code, output = _run(bad)
        assert code == 1 and "unknown_local_table" in output
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_state_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first = StateLock(tmp_path, "n1").acquire()
    with pytest.raises(FederationError) as refused:
        StateLock(tmp_path, "n1").acquire()
    assert refused.value.rule == "state_locked" and str(os.getpid()) in refused.value.message
    first.release()
    StateLock(tmp_path, "n1").acquire().release()


def test_filter_columns_finds_every_compared_column_at_any_depth() -> None:
    from nodes.check import filter_columns
    from protocols import federation_pb2 as pb
    from protocols.values import to_value

    leaf = pb.Filter(compare=pb.Comparison(column="region", op=pb.EQ, value=to_value("North")))
    listed = pb.Filter(in_list=pb.InList(column="year", values=[to_value(2020), to_value(2021)]))
    nested = pb.Filter(all_of=pb.FilterList(items=[leaf, pb.Filter(negate=listed)]))
    assert filter_columns(nested) == {"region", "year"}
