"""COUNT(DISTINCT unit) across nodes counts each entity once (the union by PSI), over real processes.

Three partners serve the shared "signals" dataset (Douane from CSV, KMar from CSV, Belastingdienst
from PostgreSQL), with exact mode allowed, so the union can be compared with pooled pandas; an
epsilon in the request switches the same federation to DP.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pandas as pd
import pytest

from federation import scenario as vocabulary
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation
from tests.integration.expected import MIN_GROUP

NODES = ["douane", "kmar", "belastingdienst"]
REGIONS = list(vocabulary.REGIONS)


@pytest.fixture(scope="module")
def union_fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("distinct"), postgres_dsn, nodes=NODES, projects=("distinct-dp",)
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _frames(fed: RunningFederation, phenomenon: str | None = None) -> dict[str, pd.DataFrame]:
    out = {}
    for node in NODES:
        frame = fed.scenario.frames[f"{node}.signals"]
        frame = frame[frame["company"].notna()]
        if phenomenon is not None:
            frame = frame[frame["phenomenon"] == phenomenon]
        out[node] = frame
    return out


def _union(frames: dict[str, pd.DataFrame]) -> pd.Series:
    pooled = pd.concat(frames.values())
    return pooled.groupby("region")["company"].nunique().reindex(REGIONS, fill_value=0)


def _per_node_sum(frames: dict[str, pd.DataFrame]) -> pd.Series:
    parts = [f.groupby("region")["company"].nunique().reindex(REGIONS, fill_value=0) for f in frames.values()]
    return sum(parts[1:], parts[0])


def test_union_equals_pooled_nunique_per_group(union_fed: RunningFederation) -> None:
    with union_fed.client() as fed:
        df = fed.query("SELECT region, COUNT(DISTINCT company) AS companies FROM signals GROUP BY region")
    assert df.attrs["distinct"] == "union"
    assert sorted(df.attrs["answered"]) == sorted(NODES)
    expected = _union(_frames(union_fed))
    shared = _per_node_sum(_frames(union_fed))
    assert (shared > expected).any(), "the scenario shares companies between partners"
    got = df.set_index("region")["companies"]
    for region in REGIONS:
        if expected[region] < MIN_GROUP:
            assert pd.isna(got[region])
        else:
            assert int(got[region]) == int(expected[region]), region


def test_union_beside_other_aggregates_with_a_filter(union_fed: RunningFederation) -> None:
    sql = (
        "SELECT region, COUNT(DISTINCT company) AS companies, COUNT(*) AS signals FROM signals "
        "WHERE phenomenon = 'drugs' GROUP BY region"
    )
    with union_fed.client() as fed:
        df = fed.query(sql).set_index("region")
    frames = _frames(union_fed, "drugs")
    expected = _union(frames)
    rows = pd.concat(frames.values()).groupby("region").size().reindex(REGIONS, fill_value=0)
    released = [r for r in REGIONS if not pd.isna(df.loc[r, "companies"])]
    assert released, "some drugs regions clear the minimum group size"
    for region in released:
        assert int(df.loc[region, "companies"]) == int(expected[region]), region
        assert int(df.loc[region, "signals"]) == int(rows[region]), region


def test_per_node_sum_only_under_its_explicit_name(union_fed: RunningFederation) -> None:
    sql = "SELECT region, COUNT_DISTINCT_PER_NODE(company) AS listed FROM signals GROUP BY region"
    with union_fed.client() as fed:
        df = fed.query(sql).set_index("region")
        single = fed.query("SELECT COUNT(DISTINCT company) AS c FROM kmar.signals")
    assert df.attrs["distinct"] == "per_node_sum"
    assert df.attrs["distinct_by_column"] == {"listed": "per_node_sum"}
    expected = _per_node_sum(_frames(union_fed))
    for region in REGIONS:
        if not pd.isna(df.loc[region, "listed"]):
            assert int(df.loc[region, "listed"]) == int(expected[region]), region
    # One node: its own distinct count is the union.
    assert single.attrs["distinct"] == "union"
    assert int(single["c"].iloc[0]) == union_fed.scenario.frames["kmar.signals"]["company"].nunique()


def _audit(fed: RunningFederation, node: str) -> list[dict]:
    text = (fed.root / "state" / node / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _charged(fed: RunningFederation, node: str) -> float:
    """Everything the node's ledger has charged to its signals dataset so far."""
    with sqlite3.connect(fed.root / "state" / node / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT cost_epsilon FROM charges WHERE dataset = 'signals'").fetchall()
    return float(sum(r[0] for r in rows))


def test_union_under_dp_is_within_the_noise_and_charges_every_party(union_fed: RunningFederation) -> None:
    project = "distinct-dp"
    before = {node: _charged(union_fed, node) for node in NODES}
    with union_fed.client() as fed:
        df = fed.query(
            "SELECT region, COUNT(DISTINCT company) AS companies FROM signals GROUP BY region",
            epsilon=1.0,
            project=project,
        )
    assert df.attrs["distinct"] == "union"
    expected = _union(_frames(union_fed))
    noise = {item["group"]["region"]: item for item in df.attrs["noise"]["companies"]}
    assert noise, "every released union count carries its noise"
    got = df.set_index("region")["companies"]
    for region, item in noise.items():
        lo, hi = item["ci95"]
        assert item["sd"] > 0 and lo < int(got[region]) < hi
        assert abs(int(got[region]) - int(expected[region])) < 8 * item["sd"], region
    cost = {n["node"]: n.get("cost", {}).get("epsilon", 0.0) for n in df.attrs["nodes"]}
    assert cost == {node: pytest.approx(1.0, rel=1e-6) for node in NODES}
    for node in NODES:
        # Ledger: charged once, the requested epsilon; audit: the union release is on record.
        assert _charged(union_fed, node) - before[node] == pytest.approx(1.0, rel=1e-6)
        entries = [e["payload"] for e in _audit(union_fed, node) if e["kind"] == "released"]
        assert any(p.get("distinct") == "company" and p.get("epsilon") == pytest.approx(1.0) for p in entries)


def test_union_beside_a_secure_sum(union_fed: RunningFederation) -> None:
    """With secure=True the COUNT(*) goes through secure aggregation and the union through PSI."""
    sql = (
        "SELECT region, COUNT(DISTINCT company) AS companies, COUNT(*) AS signals FROM signals "
        "WHERE phenomenon = 'drugs' GROUP BY region"
    )
    with union_fed.client() as fed:
        plain = fed.query(sql).set_index("region")
        secure = fed.query(sql, secure=True).set_index("region")
    assert secure.attrs["distinct"] == "union"
    assert sorted(secure.attrs["answered"]) == sorted(NODES)
    expected = _union(_frames(union_fed, "drugs"))
    compared = [r for r in plain.dropna().index if not pd.isna(secure.loc[r, "companies"])]
    assert compared, "regions released on both paths"
    for region in compared:
        assert int(secure.loc[region, "companies"]) == int(expected[region]), region
        assert int(secure.loc[region, "signals"]) == int(plain.loc[region, "signals"]), region
