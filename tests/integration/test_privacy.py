"""Differential privacy and the budget ledger, end to end over real processes and gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, parallel_jobs, start_federation

NODES = ["douane", "kmar", "belastingdienst"]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    """Nodes with the default policy: DP required, default epsilon 1, per-query cap 5."""
    running, schema = start_federation(
        tmp_path_factory.mktemp("dp"),
        postgres_dsn,
        nodes=NODES,
        dp_required=True,
        projects=("dp-intervals", "mit-7", "race", "restart", "rows-threshold"),
        edit=parallel_jobs,  # twelve submissions race for the last of a budget
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _officer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", "budget", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def test_dp_answer_carries_noise_and_intervals(private: RunningFederation) -> None:
    with private.client() as fed:
        df = fed.query(
            "SELECT port, COUNT(*) AS n, AVG(value) AS mean FROM declarations GROUP BY port",
            epsilon=2.0,
            project="dp-intervals",
        )
    frame = private.scenario.frames["douane.declarations"]
    exact = frame.groupby("port").size()
    noise = df.attrs["noise"]
    assert set(noise) == {"n", "mean"}
    for item in noise["n"]:
        port = item["group"]["port"]
        lo, hi = item["ci95"]
        assert item["sd"] > 0 and lo < hi
        # 95% intervals: all four ports inside is overwhelmingly likely; a miss of several sd is not.
        assert abs(int(df.set_index("port").loc[port, "n"]) - int(exact[port])) < 10 * item["sd"]
    cost = {n["node"]: n.get("cost", {}) for n in df.attrs["nodes"]}
    assert cost["douane"]["epsilon"] == pytest.approx(2.0, rel=1e-6)


def test_budget_is_spent_shown_and_exhausted(private: RunningFederation) -> None:
    config = str(private.paths["kmar"])
    done = _officer(
        "set", "--config", config, "--dataset", "crossings", "--project", "mit-7", "--epsilon", "2.5"
    )
    assert done.returncode == 0, done.stderr
    sql = "SELECT airport, COUNT(*) AS n FROM crossings GROUP BY airport"
    with private.client() as fed:
        fed.query(sql, epsilon=1.0, project="mit-7")
        fed.query(sql, epsilon=1.0, project="mit-7")
        budget = fed.budget("mit-7")
        row = budget[(budget["node"] == "kmar") & (budget["dataset"] == "crossings")].iloc[0]
        assert row["spent_epsilon"] == pytest.approx(2.0, rel=1e-3)
        assert row["remaining_epsilon"] == pytest.approx(0.5, rel=1e-2)
        with pytest.raises(FederationError) as info:
            fed.query(sql, epsilon=1.0, project="mit-7")
    message = str(info.value)
    assert info.value.rule == "budget"
    for needle in ("kmar", "crossings", "mit-7", "asks epsilon 1", "0.5"):
        assert needle in message, message
    shown = _officer("show", "--config", config, "--project", "mit-7", "--format", "csv")
    assert shown.returncode == 0 and "crossings,mit-7,2.5" in shown.stdout
    history = _officer("history", "--config", config, "--project", "mit-7", "--format", "csv")
    assert history.stdout.count("charge") == 2


def test_parallel_submissions_never_overspend(private: RunningFederation) -> None:
    config = str(private.paths["douane"])
    assert (
        _officer(
            "set", "--config", config, "--dataset", "declarations", "--project", "race", "--epsilon", "5"
        ).returncode
        == 0
    )
    sql = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"

    def submit(_: int) -> bool:
        with private.client() as fed:
            try:
                fed.query(sql, epsilon=1.0, project="race", timeout=60)
                return True
            except FederationError as exc:
                assert exc.rule == "budget", str(exc)
                return False

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(submit, range(12)))
    assert sum(outcomes) == 5  # exactly the five that fit
    with private.client() as fed:
        budget = fed.budget("race")
    spent = budget[(budget["node"] == "douane")]["spent_epsilon"].iloc[0]
    assert spent == pytest.approx(5.0, rel=1e-6)


def test_ledger_survives_node_restart(private: RunningFederation) -> None:
    with private.client() as fed:
        fed.query(
            "SELECT sector, COUNT(*) AS n FROM vat_returns GROUP BY sector", epsilon=0.5, project="restart"
        )
    private.procs.stop("belastingdienst")
    private.procs.start_node("belastingdienst")
    private.procs.wait_for_nodes(set(NODES), timeout=60)
    with private.client() as fed:
        budget = fed.budget("restart")
    line = budget[(budget["node"] == "belastingdienst") & (budget["dataset"] == "vat_returns")].iloc[0]
    assert line["spent_epsilon"] == pytest.approx(0.5, rel=1e-6)
    assert line["releases"] == 1


def test_per_query_cap_and_bad_requests(private: RunningFederation) -> None:
    with private.client() as fed:
        with pytest.raises(FederationError) as info:
            fed.query("SELECT COUNT(*) AS n FROM crossings", epsilon=50)
        assert info.value.rule == "epsilon_cap" and "kmar" in str(info.value)
        with pytest.raises(FederationError) as both:
            fed.query("SELECT COUNT(*) AS n FROM crossings", epsilon=1, rho=1)
        assert both.value.rule == "privacy_request"


def test_count_star_query_suppresses_on_the_noisy_row_count(private: RunningFederation) -> None:
    """COUNT(*) without COUNT(DISTINCT unit): the noisy row count decides suppression against a
    threshold in rows, and the whole budget goes to COUNT(*) (no separate unit count)."""
    grouping = "FROM declarations GROUP BY port, goods_category, origin_country, year"
    with private.client() as fed:
        rows = fed.query(
            f"SELECT port, goods_category, origin_country, year, COUNT(*) AS n {grouping}",
            epsilon=1.0,
            project="rows-threshold",
        )
        units = fed.query(
            f"SELECT port, goods_category, origin_country, year, COUNT(*) AS n, "
            f"COUNT(DISTINCT company) AS c {grouping}",
            epsilon=1.0,
            project="rows-threshold",
        )
    reasons = [by for item in rows.attrs["suppressed"] for by in item["by"]]
    assert reasons, "the grouping needs small groups"
    assert all("noisy row count below" in by for by in reasons)
    assert all("noisy unit count below" in by for item in units.attrs["suppressed"] for by in item["by"])
    # One measurement instead of two: COUNT(*) carries twice the share, half the noise.
    sd_rows = {item["sd"] for item in rows.attrs["noise"].get("n", [])}
    sd_units = {item["sd"] for item in units.attrs["noise"].get("n", [])}
    if sd_rows and sd_units:
        assert max(sd_rows) < min(sd_units)
