"""Federated answers over real processes and real gRPC equal pooled pandas answers."""

from __future__ import annotations

import pytest

from federation import scenario as vocabulary
from tests.integration.expected import assert_same, pooled

PORTS = list(vocabulary.PORTS)
REGIONS = list(vocabulary.REGIONS)
SECTORS = list(vocabulary.SECTORS)
YEARS = list(vocabulary.YEARS)
PHENOMENA = list(vocabulary.PHENOMENA)
STATUSES = list(vocabulary.STATUSES)


def test_all_six_nodes_connected(fed) -> None:
    nodes = fed.nodes()
    assert set(nodes[nodes["connected"]]["node"]) == {
        "politie",
        "om",
        "fiod",
        "douane",
        "belastingdienst",
        "kmar",
    }


def test_csv_source_group_by_port(fed, federation) -> None:
    sql = (
        "SELECT port, COUNT(*) AS n, SUM(value) AS total, AVG(value) AS mean FROM declarations "
        "WHERE year = 2023 GROUP BY port"
    )
    df = fed.query(sql)
    expected = pooled(
        federation.scenario,
        "declarations",
        ["port"],
        {"port": PORTS},
        "company",
        {"n": ("count", None), "total": ("sum", "value"), "mean": ("avg", "value")},
        where=lambda d: d["year"] == 2023,
    )
    assert_same(df, expected, ["port"])
    assert df.attrs["answered"] == ["douane"]
    assert df["n"].notna().sum() >= 2  # the comparison covers released cells, not only suppressed ones


def test_postgres_source_avg_with_filter(fed, federation) -> None:
    sql = (
        "SELECT sector, COUNT(DISTINCT company) AS companies, AVG(turnover) AS avg_turnover FROM vat_returns "
        "WHERE anomaly = 1 AND NOT region IN ('Limburg', 'Zeeland-West-Brabant') GROUP BY sector"
    )
    df = fed.query(sql)
    expected = pooled(
        federation.scenario,
        "vat_returns",
        ["sector"],
        {"sector": SECTORS},
        "company",
        {"companies": ("count_distinct", None), "avg_turnover": ("avg", "turnover")},
        where=lambda d: (d["anomaly"] == 1) & ~d["region"].isin(["Limburg", "Zeeland-West-Brabant"]),
    )
    assert_same(df, expected, ["sector"])
    assert df.attrs["answered"] == ["belastingdienst"]


def test_parquet_source_between_and_or(fed, federation) -> None:
    sql = (
        "SELECT status, COUNT(*) AS cases, SUM(seized_amount) AS seized FROM cases "
        "WHERE (phenomenon = 'drugs' OR phenomenon = 'money_laundering') AND year BETWEEN 2020 AND 2023 GROUP BY status"
    )
    df = fed.query(sql)
    expected = pooled(
        federation.scenario,
        "cases",
        ["status"],
        {"status": STATUSES},
        "person",
        {"cases": ("count", None), "seized": ("sum", "seized_amount")},
        where=lambda d: d["phenomenon"].isin(["drugs", "money_laundering"]) & d["year"].between(2020, 2023),
    )
    assert_same(df, expected, ["status"])


def test_shared_dataset_across_all_six_partners(fed, federation) -> None:
    sql = "SELECT region, COUNT(*) AS signals, COUNT_DISTINCT_PER_NODE(company) AS companies FROM signals GROUP BY region"
    df = fed.query(sql)
    expected = pooled(
        federation.scenario,
        "signals",
        ["region"],
        {"region": REGIONS},
        "company",
        {"signals": ("count", None), "companies": ("count_distinct", None)},
    )
    assert_same(df, expected, ["region"])
    assert sorted(df.attrs["answered"]) == sorted(
        ["politie", "om", "fiod", "douane", "belastingdienst", "kmar"]
    )


def test_two_group_columns_report_the_whole_domain(fed, federation) -> None:
    sql = "SELECT phenomenon, year, COUNT(*) AS n FROM signals WHERE phenomenon IN ('drugs', 'crypto') GROUP BY phenomenon, year"
    df = fed.query(sql)
    assert len(df) == 12 * len(YEARS)  # every key of the declared domain, including filtered-out ones
    expected = pooled(
        federation.scenario,
        "signals",
        ["phenomenon", "year"],
        {"phenomenon": PHENOMENA, "year": YEARS},
        "company",
        {"n": ("count", None)},
        where=lambda d: d["phenomenon"].isin(["drugs", "crypto"]),
    )
    assert_same(df, expected, ["phenomenon", "year"])
    assert df.attrs["suppressed"], "filtered-out groups must be reported as suppressed"


def test_single_node_addressing(fed, federation) -> None:
    df = fed.query("SELECT COUNT(*) AS n FROM kmar.signals")
    expected = pooled(
        federation.scenario, "signals", [], {}, "company", {"n": ("count", None)}, nodes=["kmar"]
    )
    assert_same(df, expected, [])
    assert df.attrs["answered"] == ["kmar"]


def test_min_nodes_met(fed) -> None:
    df = fed.query("SELECT COUNT(*) AS n FROM signals", min_nodes=6)
    assert len(df.attrs["answered"]) == 6


def test_datasets_show_public_metadata_only(fed) -> None:
    ds = fed.datasets()
    decl = ds[(ds["node"] == "douane") & (ds["dataset"] == "declarations")].set_index("column")
    assert decl.loc["port", "kind"] == "category"
    assert "Rotterdam" in decl.loc["port", "domain_or_bounds"]
    assert decl.loc["value", "domain_or_bounds"].startswith("[0")
    assert decl.loc["company", "kind"] == "identifier"
    assert "RTM" not in " ".join(ds["domain_or_bounds"])  # local codes stay at the node


def test_mock_rows_follow_declared_schema(fed) -> None:
    df = fed.mock("douane.declarations", n=100, seed=3)
    assert len(df) == 100
    assert set(df["port"]) <= set(PORTS)
    assert df["value"].between(0, 2_000_000).all()
    assert df.attrs["mock"] is True


def test_job_history_records_who_and_status(fed) -> None:
    fed.query("SELECT COUNT(*) AS n FROM crossings")
    jobs = fed.jobs(limit=5)
    assert jobs.iloc[0]["status"] == "complete"
    assert "kmar:answered" in jobs.iloc[0]["nodes"]
    assert jobs.iloc[0]["result_digest"]


@pytest.mark.parametrize(
    ("sql", "rule", "needle"),
    [
        ("SELECT port, COUNT(*) FROM nosuch GROUP BY port", "unknown_dataset", "nosuch"),
        ("SELECT port, SUM(weight) FROM declarations GROUP BY port", "unknown_column", "weight"),
        ("SELECT company, COUNT(*) FROM declarations GROUP BY company", "identifier_column", "company"),
        (
            "SELECT port, COUNT(*) FROM declarations WHERE port = 'Antwerpen' GROUP BY port",
            "value_outside_domain",
            "Antwerpen",
        ),
        ("SELECT value, COUNT(*) FROM declarations GROUP BY value", "not_groupable", "value"),
        ("SELECT COUNT(*) FROM nobody.declarations", "node_unreachable", "nobody"),
        ("SELECT * FROM declarations", "raw_rows", "SELECT *"),
        ("SELECT port FROM declarations GROUP BY port", "raw_rows", "aggregate"),
        ("SELEC port FRM declarations", "malformed_sql", "cannot parse"),
        ("SELECT COUNT(*) FROM declarations; DROP TABLE x", "malformed_sql", "one SELECT"),
    ],
)
def test_refusals_name_rule_and_node(fed, sql: str, rule: str, needle: str) -> None:
    from protocols.errors import FederationError

    with pytest.raises(FederationError) as info:
        fed.query(sql)
    assert info.value.rule == rule
    assert needle in str(info.value)
    if rule in {"unknown_column", "identifier_column", "value_outside_domain", "not_groupable"}:
        assert "douane" in str(info.value)
