"""The officer's commands on a real node state folder: audit export, pending approvals, approve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from typer.testing import CliRunner

from federation import pki
from federation.cli import app
from federation.query import parse_query
from nodes.approvals import ApprovalStore, approvals_path
from nodes.audit import AuditLog, load_or_create_signing_key
from nodes.config import load_node_config
from protocols import federation_pb2 as pb
from protocols.spec_text import query_sql, spec_text

SQL = (
    "SELECT region, COUNT(*) AS n, SUM(turnover) AS total FROM vat_returns "
    "WHERE phenomenon = 'drugs' AND year IN (2020, 2021) AND NOT (port = 'O''Hara') GROUP BY region"
)
LONG_REASON = "the project's privacy budget for the dataset is exhausted: " + "x" * 300


@pytest.fixture
def node(tmp_path: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nid = "douane"\nstate_dir = "state"\ninsecure = true\n')
    cfg = load_node_config(config)
    audit = AuditLog(
        cfg.state_dir / "audit.log", cfg.node_id, signing_key=load_or_create_signing_key(cfg.audit_key_path)
    )
    spec = MessageToDict(parse_query(SQL), preserving_proto_field_name=True)
    audit.append("received", "job-1", {"requested_by": "ana.lyst", "spec": spec})
    audit.append(
        "released",
        "job-1",
        {
            "dataset": "vat_returns",
            "project": "p",
            "digest": "ab" * 32,
            "groups": 7,
            "suppressed": 2,
            "epsilon": 0.5,
        },
    )
    audit.append("received", "job-2", {"requested_by": "ana.lyst", "spec": spec})
    audit.append("refused", "job-2", {"rule": "budget", "reason": LONG_REASON})
    job = pb.JobRequest(job_id="job-3", query=parse_query(SQL), requested_by="ana.lyst")
    job.query.project = "sensitive"
    ApprovalStore(approvals_path(cfg.state_dir), cfg.node_id, audit).note_request(
        job, "query", "ana.lyst", "fraud"
    )
    return config


def _run(*args: str, width: int = 80) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(width), "FEDERATION_TLS_DIR": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What `federation` prints for a FederationError (federation.cli.main): one line, exit 1.
        return 1, str(result.exception)
    return result.exit_code, result.output


def test_spec_text_gives_back_sql_that_parses_to_the_same_spec() -> None:
    spec = parse_query(SQL)
    text = query_sql(MessageToDict(spec, preserving_proto_field_name=True))
    assert text.startswith("SELECT region, COUNT(*) AS n, SUM(turnover) AS total FROM vat_returns WHERE")
    assert parse_query(text) == spec
    assert spec_text(json.dumps(MessageToDict(spec, preserving_proto_field_name=True))) == text


def test_audit_export_json_is_complete_valid_json(node: Path) -> None:
    code, output = _run("audit", "export", "--config", str(node), "--format", "json")
    assert code == 0
    document = json.loads(output)
    assert [e["seq"] for e in document["entries"]] == [1, 2, 3, 4]
    assert document["entries"][3]["payload"]["reason"] == LONG_REASON  # nothing cut


def test_audit_export_table_shows_sql_figures_and_requester_at_80_columns(node: Path) -> None:
    code, output = _run("audit", "export", "--config", str(node))
    assert code == 0
    assert all(len(line) <= 80 for line in output.splitlines()), output
    flat = re.sub(r"\s+", " ", output.replace("│", " "))
    assert "ana.lyst" in flat
    assert "SUM(turnover)" in flat and "GROUP" in flat
    assert "7 group(s), 2 suppressed, epsilon 0.5" in flat
    assert "rule: budget" in flat


def test_audit_export_csv_keeps_every_field_whole(node: Path) -> None:
    import io

    import pandas as pd

    code, output = _run("audit", "export", "--config", str(node), "--format", "csv")
    assert code == 0
    frame = pd.read_csv(io.StringIO(output))
    assert len(frame) == 4 and LONG_REASON in frame.loc[3, "what"]
    assert frame.loc[0, "by"] == "ana.lyst" and frame.loc[0, "what"].startswith("SELECT region")


def test_pending_approvals_show_the_job_as_sql(node: Path) -> None:
    code, output = _run("approvals", "--config", str(node), "--pending", "--format", "json")
    assert code == 0
    (row,) = json.loads(output)["rows"]
    assert row["job"] == query_sql(MessageToDict(_spec_of(row), preserving_proto_field_name=True))
    assert row["job"].startswith("SELECT region") and row["requested_by"] == "ana.lyst"
    code, table = _run("approvals", "--config", str(node), "--pending")
    assert code == 0 and all(len(line) <= 80 for line in table.splitlines()), table
    assert "SELECT region" in table and "{" not in table


def _spec_of(row: dict) -> pb.QuerySpec:
    spec = parse_query(SQL)
    spec.project = "sensitive"
    return spec


def test_approve_records_the_kit_subject_or_requires_by(node: Path, tmp_path: Path) -> None:
    cfg = load_node_config(node)
    (request,) = ApprovalStore(approvals_path(cfg.state_dir), cfg.node_id, None).requests()  # type: ignore[arg-type]
    code, output = _run("approve", "--config", str(node), "--job", request.job_hash)
    assert code == 1 and "--kit" in output and "--by" in output
    pki.init_root(tmp_path / "pki")
    officer = pki.issue(tmp_path / "pki", "po-douane", "privacy_officer", org="douane")
    analyst = pki.issue(tmp_path / "pki", "ana.lyst", "analyst", org="douane")
    code, output = _run(
        "approve", "--config", str(node), "--job", request.job_hash, "--kit", str(analyst.folder)
    )
    assert code == 1 and "wrong_role" in output
    code, output = _run(
        "approve", "--config", str(node), "--job", request.job_hash, "--kit", str(officer.folder)
    )
    assert code == 0, output
    code, output = _run("approvals", "--config", str(node), "--format", "json")
    (approval,) = json.loads(output)["rows"]
    assert approval["approved_by"] == "po-douane"


def test_spec_text_names_per_query_bounds_and_overlaps() -> None:
    from protocols.spec_text import aggregate_text

    # MessageToDict leaves out a lower bound of 0: it is still shown.
    text = aggregate_text({"function": "SUM", "column": "value", "alias": "s", "bounds": {"upper": 5.0}})
    assert text == "SUM(value) /* bounds 0.0..5.0 */ AS s"
    overlap = {"on": "company", "datasets": [{"dataset": "douane.signals"}, {"dataset": "kmar.signals"}]}
    assert spec_text(overlap) == "OVERLAP ON company OF douane.signals, kmar.signals"
