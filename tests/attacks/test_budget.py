"""A privacy budget cannot be multiplied by project names (docs/privacy.md, "Budgets").

Three nodes run as processes over mutual TLS with DP required:
- Douane keeps the safe default: no budget for a project its officer has not granted one;
- KMar gives every project a default budget of 10, and every dataset a cap of 10 over all projects
  together, both from its config;
- OM gives a default budget per project too; its officer caps a dataset at run time.
The coordinator lists a few projects and keeps the development catch-all '*'.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nodes.audit import export
from nodes.config import load_node_config
from nodes.context import open_ledger
from privacy.ledger import Charge
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, parallel_jobs, start_federation

NODES = ["douane", "kmar", "om"]
LISTED = ("p1", "p2", "p3", "p4", "ungranted", "left", "right")


def _edit(paths: dict[str, Path]) -> None:
    douane = paths["douane"].read_text()
    assert "require_budget = false" in douane
    paths["douane"].write_text(douane.replace("require_budget = false", "require_budget = true"))
    kmar = paths["kmar"].read_text()
    assert "dataset_budget_epsilon = 30.0" in kmar
    paths["kmar"].write_text(kmar.replace("dataset_budget_epsilon = 30.0", "dataset_budget_epsilon = 10.0"))
    parallel_jobs(paths)  # twelve submissions race for the last of a cap


@pytest.fixture(scope="module")
def fed_budget(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("budget"),
        postgres_dsn,
        nodes=NODES,
        dp_required=True,
        edit=_edit,
        projects=LISTED,
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _officer(fed: RunningFederation, node: str, *args: str) -> str:
    """A ``federation budget ...`` command run by the node's privacy officer, at the node."""
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "budget", *args, "--config", str(fed.paths[node])],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _charges(fed: RunningFederation, node: str, dataset: str) -> list[Charge]:
    return open_ledger(load_node_config(fed.paths[node])).charges(dataset=dataset)


def _ask(fed: RunningFederation, sql: str, project: str, epsilon: float) -> str:
    """'answered', or the rule of the refusal."""
    with fed.client() as client:
        try:
            client.query(sql, epsilon=epsilon, project=project, timeout=60)
            return "answered"
        except FederationError as exc:
            return exc.rule


def test_four_project_names_stop_at_the_dataset_cap(fed_budget: RunningFederation) -> None:
    """Four projects, each with a default budget of 10, spend 10 on one dataset together, not 40."""
    sql = "SELECT airport, COUNT(*) AS n FROM crossings GROUP BY airport"
    outcomes = [_ask(fed_budget, sql, name, 5.0) for name in ("p1", "p2", "p3", "p4") for _ in range(2)]
    assert outcomes.count("answered") == 2, outcomes
    assert set(outcomes) == {"answered", "dataset_budget"}, outcomes
    charges = _charges(fed_budget, "kmar", "crossings")
    assert sum(c.epsilon for c in charges) == pytest.approx(10.0)
    cap = open_ledger(load_node_config(fed_budget.paths["kmar"])).cap("crossings")
    assert cap.spent_epsilon <= cap.total_epsilon + 1e-9 and cap.total_epsilon == 10.0
    # The refusal names the rule and the node, and nothing another project spent.
    with fed_budget.client() as client, pytest.raises(FederationError) as info:
        client.query(sql, epsilon=0.5, project="p4")
    assert info.value.rule == "dataset_budget" and "kmar" in str(info.value)
    assert "crossings" in str(info.value) and "p1" not in str(info.value)


def test_project_without_a_grant_is_refused(fed_budget: RunningFederation) -> None:
    sql = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"
    with fed_budget.client() as client, pytest.raises(FederationError) as info:
        client.query(sql, epsilon=1.0, project="ungranted")
    assert info.value.rule == "budget_not_granted" and "douane" in str(info.value)
    assert "'ungranted'" in str(info.value) and "federation budget set" in str(info.value)
    assert _charges(fed_budget, "douane", "declarations") == []
    refused = [e for e in _audit(fed_budget, "douane") if e["kind"] == "refused"]
    assert refused and refused[-1]["payload"]["rule"] == "budget_not_granted"
    # Once the officer grants a budget, the same project is served and charged.
    shown = _officer(
        fed_budget, "douane", "set", "--dataset", "declarations", "--project", "ungranted", "--epsilon", "2"
    )
    assert "epsilon 2 at delta 1e-06" in shown
    with fed_budget.client() as client:
        df = client.query(sql, epsilon=1.0, project="ungranted")
        budget = client.budget("ungranted")
    assert len(df) > 0
    line = budget[(budget["node"] == "douane") & (budget["dataset"] == "declarations")].iloc[0]
    assert (line["total_epsilon"], line["spent_epsilon"]) == (2.0, pytest.approx(1.0))
    assert [c.project for c in _charges(fed_budget, "douane", "declarations")] == ["ungranted"]


def test_catch_all_names_share_one_budget(fed_budget: RunningFederation) -> None:
    """Every name the catch-all admits is charged at the nodes as one project, '*'."""
    sql = "SELECT region, COUNT(*) AS n FROM signals GROUP BY region"
    with fed_budget.client() as client:
        first = client.query(sql, epsilon=5.0, project="invented-a")
    outcomes = {n["node"]: n for n in first.attrs["nodes"]}
    # Douane has granted the catch-all nothing, whatever name the analyst makes up.
    assert outcomes["douane"]["status"] == "refused" and outcomes["douane"]["rule"] == "budget_not_granted"
    assert "'*'" in outcomes["douane"]["reason"]
    assert outcomes["kmar"]["status"] == "answered" and outcomes["om"]["status"] == "answered"
    _officer(fed_budget, "douane", "set", "--dataset", "signals", "--project", "*", "--epsilon", "10")
    for name in ("invented-b", "invented-c", "invented-d", "invented-e"):
        _ask(fed_budget, sql, name, 5.0)
    for node in NODES:
        charges = _charges(fed_budget, node, "signals")
        assert {c.project for c in charges} == {"*"}, (node, charges)
        assert sum(c.epsilon for c in charges) == pytest.approx(10.0), node
    # Any invented name reads the one shared budget.
    with fed_budget.client() as client:
        budget = client.budget("invented-z")
    lines = budget[budget["dataset"] == "signals"].set_index("node")
    assert set(lines["project"]) == {"*"}
    assert lines.loc["douane", "remaining_epsilon"] == pytest.approx(0.0, abs=1e-9)


def test_parallel_charges_on_two_projects_never_exceed_the_cap(fed_budget: RunningFederation) -> None:
    shown = _officer(fed_budget, "om", "cap", "--dataset", "cases", "--epsilon", "6", "--by", "officer-om")
    assert "epsilon 6 at delta 1e-06" in shown
    sql = "SELECT phenomenon, COUNT(*) AS n FROM cases GROUP BY phenomenon"
    projects = ["left", "right"] * 6  # each project's own budget (10) would take all six

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(lambda p: _ask(fed_budget, sql, p, 1.0), projects))
    assert sorted(outcomes) == ["answered"] * 6 + ["dataset_budget"] * 6, outcomes
    charges = _charges(fed_budget, "om", "cases")
    assert len(charges) == 6 and sum(c.epsilon for c in charges) == pytest.approx(6.0)
    caps = _officer(fed_budget, "om", "show", "--caps", "--format", "csv")
    assert "cases,6.0,6.0,0.0," in caps, caps
    history = _officer(fed_budget, "om", "history", "--dataset", "cases", "--format", "csv")
    assert "cap,cases,(all projects),6.0,officer-om" in history, history


def _audit(fed: RunningFederation, node: str) -> list[dict]:
    return export(load_node_config(fed.paths[node]).state_dir / "audit.log")
