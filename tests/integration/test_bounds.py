"""Contribution bounds per query, accuracy before spending, and intervals in the output, end to end
over real node processes, real gRPC, DuckDB and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from nodes.audit import export
from nodes.config import load_node_config
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar", "belastingdienst"]
CLAMPED = "SELECT SUM(LEAST(GREATEST(value, 0), 50000)) AS total FROM declarations"
DECLARED = "SELECT SUM(value) AS total FROM declarations"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    """Nodes with the default policy: DP required, default epsilon 1, per-query cap 5."""
    running, schema = start_federation(
        tmp_path_factory.mktemp("bounds"), postgres_dsn, nodes=NODES, dp_required=True
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _sd(df: object, column: str) -> float:
    cells = df.attrs["noise"][column]  # type: ignore[attr-defined]
    assert cells, column
    return float(cells[0]["sd"])


def _released(federation: RunningFederation, node: str, job_id: str) -> dict:
    state = load_node_config(federation.paths[node]).state_dir
    entries = [
        e for e in export(state / "audit.log") if e.get("job_id") == job_id and e["kind"] == "released"
    ]
    assert len(entries) == 1, entries
    return entries[0]["payload"]


def test_tighter_bounds_shrink_the_noise_and_the_audit_says_so(private: RunningFederation) -> None:
    with private.client() as fed:
        declared = fed.query(DECLARED, epsilon=1.0, project="bounds-sd")
        clamped = fed.query(CLAMPED, epsilon=1.0, project="bounds-sd")
        by_argument = fed.query(DECLARED, epsilon=1.0, project="bounds-sd", bounds={"value": (0, 50000)})
    # Sensitivity k * 50 000 instead of k * 2 000 000: forty times less noise.
    assert _sd(clamped, "total") == pytest.approx(_sd(declared, "total") / 40, rel=1e-6)
    assert _sd(by_argument, "total") == pytest.approx(_sd(clamped, "total"), rel=1e-12)
    frame = private.scenario.frames["douane.declarations"]
    assert float(clamped["total"].iloc[0]) <= float(frame["value"].clip(0, 50000).sum()) + 10 * _sd(
        clamped, "total"
    )
    audit = _released(private, "douane", clamped.attrs["job_id"])
    assert audit["bounds"] == {"total": [0.0, 50000.0]}
    assert _released(private, "douane", declared.attrs["job_id"])["bounds"] == {"total": [0.0, 2_000_000.0]}
    # The bounding figures come back, noisy, with their intervals.
    bounding = clamped.attrs["bounding"]
    assert set(bounding) == {"units_truncated", "values_clamped"}
    clamps = bounding["values_clamped"]["total"]
    assert clamps["sd"] > 0 and clamps["ci95"][0] <= clamps["value"] <= clamps["ci95"][1]
    exact_clamped = int((frame["value"] > 50000).sum())
    assert abs(clamps["value"] - exact_clamped) < 10 * clamps["sd"] + 0.1 * exact_clamped


def test_fewer_rows_per_unit_shrink_the_noise(private: RunningFederation) -> None:
    sql = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"
    with private.client() as fed:
        full = fed.query(sql, epsilon=1.0, project="bounds-rows")
        info = next(d for d in fed.dataset_infos() if d.name == "declarations")
        lower = fed.query(sql, epsilon=1.0, project="bounds-rows", max_rows_per_unit=2)
        audit = _released(private, "douane", lower.attrs["job_id"])
        with pytest.raises(FederationError) as above:
            fed.query(sql, epsilon=1.0, project="bounds-rows", max_rows_per_unit=info.max_rows_per_unit + 1)
    assert info.max_rows_per_unit > 2
    assert _sd(lower, "n") < _sd(full, "n") * 3 / info.max_rows_per_unit
    assert audit["max_rows_per_unit"] == 2
    assert above.value.rule == "max_rows_outside_declared" and "douane" in str(above.value)


def test_bounds_outside_the_declared_ones_are_refused_naming_rule_and_node(
    private: RunningFederation,
) -> None:
    with private.client() as fed:
        for sql in (
            "SELECT SUM(LEAST(GREATEST(value, -5), 1000)) AS t FROM declarations",
            "SELECT AVG(LEAST(value, 3000000)) AS t FROM declarations",
        ):
            with pytest.raises(FederationError) as info:
                fed.query(sql, epsilon=1.0, project="bounds-refused")
            assert info.value.rule == "bounds_outside_declared", sql
            assert "node douane" in str(info.value) and "declared bounds" in str(info.value)


def test_feasible_range_a_non_negative_sum_is_never_negative(private: RunningFederation) -> None:
    # Few rows: the noise dwarfs the sum, so unclipped answers would often be negative.
    sql = "SELECT port, SUM(value) AS total FROM declarations WHERE value < 1 GROUP BY port"
    with private.client() as fed:
        df = fed.query(sql, epsilon=0.5, project="bounds-feasible")
    assert df.attrs["feasible"]["total"] == (0.0, float("inf"))
    for value in df["total"].dropna():
        assert value >= 0
    for cell in df.attrs["noise"].get("total", []):
        assert cell["ci95"][0] >= 0


def test_explain_spends_nothing_and_matches_the_real_noise(private: RunningFederation) -> None:
    queries = [
        ("SELECT region, COUNT(*) AS n FROM signals GROUP BY region", {}),
        (
            "SELECT sector, SUM(LEAST(turnover, 100000)) AS t, AVG(turnover) AS m FROM vat_returns GROUP BY sector",
            {},
        ),
        ("SELECT COUNT(DISTINCT company) AS c FROM declarations", {"max_rows_per_unit": 3}),
    ]
    with private.client() as fed:
        before = fed.budget("bounds-explain")
        plans = [fed.explain(sql, epsilon=2.0, **kw) for sql, kw in queries]
        after = fed.budget("bounds-explain")
        assert before["spent_epsilon"].tolist() == after["spent_epsilon"].tolist()
        assert before["releases"].tolist() == after["releases"].tolist()
        results = [fed.query(sql, epsilon=2.0, project="bounds-explain", **kw) for sql, kw in queries]
    for plan, df in zip(plans, results, strict=True):
        combined = plan[plan["node"] == "all"].set_index("aggregate")
        for column, cells in df.attrs["noise"].items():
            if column == "m":  # AVG: the sd of the ratio depends on the count; explain gives its sum's
                continue
            for cell in cells:
                assert cell["sd"] == pytest.approx(combined.loc[column, "noise_sd"], rel=1e-9)
                lo, hi = cell["ci95"]
                value = float(
                    df.loc[df[list(cell["group"])].eq(pd_row(cell["group"])).all(axis=1), column].iloc[0]
                )
                if not (cell.get("clipped")):
                    assert (hi - lo) / 2 == pytest.approx(combined.loc[column, "ci95_half_width"], rel=1e-9)
                assert lo <= value <= hi
        per_node = plan[plan["node"] != "all"]
        answered = set(df.attrs["answered"])
        assert set(per_node["node"]) == answered
        for node in df.attrs["nodes"]:
            charged = node.get("cost", {}).get("epsilon", 0.0)
            explained = per_node[per_node["node"] == node["node"]]["epsilon"].iloc[0]
            assert charged == pytest.approx(explained, rel=1e-9)
    thresholds = plans[0].set_index("node")["suppression_threshold"]
    assert thresholds["all"].endswith("rows (summed)")
    assert all(t.endswith("rows (node-level)") for t in thresholds.drop("all"))
    for row in results[0].attrs["suppressed"]:  # the coordinator decided against the same threshold
        assert any(thresholds["all"].split()[0] in why for why in row["by"])


def test_explain_matches_a_union_count_across_nodes(private: RunningFederation) -> None:
    sql = "SELECT region, COUNT(DISTINCT company) AS c, COUNT(*) AS n FROM signals GROUP BY region"
    with private.client() as fed:
        plan = fed.explain(sql, epsilon=1.0)
        df = fed.query(sql, epsilon=1.0, project="bounds-union")
    assert df.attrs["distinct"] == "union"
    combined = plan[plan["node"] == "all"].set_index("aggregate")
    assert combined.loc["c", "suppression_threshold"].endswith("units (union)")
    for column in ("c", "n"):
        for cell in df.attrs["noise"][column]:
            assert cell["sd"] == pytest.approx(combined.loc[column, "noise_sd"], rel=1e-9)
            if not cell["clipped"]:
                assert (cell["ci95"][1] - cell["ci95"][0]) / 2 == pytest.approx(
                    combined.loc[column, "ci95_half_width"], rel=1e-9
                )
    per_node = plan[(plan["node"] != "all") & (plan["aggregate"] == "n")].set_index("node")["epsilon"]
    for node in df.attrs["nodes"]:
        assert node["cost"]["epsilon"] == pytest.approx(per_node[node["node"]], rel=1e-9)


def pd_row(group: dict) -> list:
    return list(group.values())


def test_accuracy_picks_the_smallest_epsilon_that_meets_it(private: RunningFederation) -> None:
    sql = "SELECT region, COUNT(*) AS n FROM signals GROUP BY region"
    with private.client() as fed:
        df = fed.query(sql, accuracy=150.0, project="bounds-accuracy")
        chosen = df.attrs["epsilon_for_accuracy"]
        plan = fed.explain(sql, epsilon=chosen)
        smaller = fed.explain(sql, epsilon=chosen * 0.99)
        with pytest.raises(FederationError) as info:
            fed.query(sql, accuracy=0.5, project="bounds-accuracy")
    width = float(plan[plan["node"] == "all"]["ci95_half_width"].iloc[0])
    assert width <= 150.0 < float(smaller[smaller["node"] == "all"]["ci95_half_width"].iloc[0])
    for cell in df.attrs["noise"]["n"]:
        assert (cell["ci95"][1] - cell["ci95"][0]) / 2 <= 150.0 or cell["clipped"]
    assert info.value.rule == "accuracy_unreachable"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_explain_and_table_intervals(private: RunningFederation) -> None:
    env = {
        "FEDERATION_COORDINATOR": private.address,
        "FEDERATION_TLS_DIR": str(private.root / "pki" / "kits" / "analyst"),
    }
    explained = _cli(
        "query",
        "--explain",
        "--epsilon",
        "1",
        "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port",
        env=env,
    )
    assert explained.returncode == 0, explained.stderr
    assert "noise_sd" in explained.stdout and "nothing spent" in explained.stdout
    table = _cli(
        "query",
        "--project",
        "bounds-cli",
        "--bounds",
        "value=0:50000",
        "SELECT port, SUM(value) AS total FROM declarations GROUP BY port",
        env=env,
    )
    assert table.returncode == 0, table.stderr
    assert "total 95% CI" in table.stdout and "bounding figures" in table.stderr
    bad = _cli("query", "--bounds", "value=0:9000000", "SELECT SUM(value) FROM declarations", env=env)
    assert bad.returncode != 0 and "bounds_outside_declared" in bad.stderr and "Traceback" not in bad.stderr
