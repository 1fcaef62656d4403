"""Differencing attacks on exact releases (nodes with ``dp_required = false``), over a real TLS
federation: coordinator and nodes as OS processes, one source on PostgreSQL.

Each test plays one way around a check that compared only unit sets per project: reading the count
from the refusal, dropping one row of a unit that stays, changing the project name, subtracting
released cells from a total, and differencing through secure aggregation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from federation.scenario import MIN_GROUP_SIZE
from nodes.differencing import RULE
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from tests.attacks.test_defences import _analyst
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar", "belastingdienst", "politie"]
M = MIN_GROUP_SIZE


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(tmp_path_factory.mktemp("differencing"), postgres_dsn, nodes=NODES)
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _frame(fed: RunningFederation, key: str, unit: str) -> pd.DataFrame:
    frame = fed.scenario.frames[key]
    return frame[frame[unit].notna()]


def _isolating(frame: pd.DataFrame, unit: str, columns: list[str]) -> tuple[str, Any, int]:
    """A (column, value) whose ``<>`` filter drops a few units entirely: 0 < units < M."""
    for column in columns:
        for value in sorted(frame[column].dropna().unique(), key=str):
            only = frame.groupby(unit)[column].apply(lambda s, v=value: bool((s == v).all()))
            isolated = int(only.sum())
            if 0 < isolated < M:
                return column, value, isolated
    raise AssertionError("the scenario must hold a value that a few units have on every row")


def _few_rows(frame: pd.DataFrame, unit: str, columns: list[str]) -> str:
    """A condition matching rows of a few units only (0 < units < M), for ``AND NOT (...)``."""
    for i, first in enumerate(columns):
        for second in columns[i + 1 :]:
            groups = frame.groupby([first, second])[unit].nunique()
            few = groups[(groups > 0) & (groups < M)]
            if len(few):
                a, b = few.index[0]
                return f"{first} = {_literal(a)} AND {second} = {_literal(b)}"
    raise AssertionError("the scenario must hold a combination that only a few units have")


def _literal(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _audit(fed: RunningFederation, node: str) -> list[dict[str, Any]]:
    log = fed.root / "state" / node / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _outcome(df: pd.DataFrame, node: str) -> dict[str, Any]:
    return next(n for n in df.attrs["nodes"] if n["node"] == node)


# --------------------------------------------------------------------------- a. the refusal's text


def test_refusal_states_no_count_and_the_coordinator_stores_none(fed: RunningFederation) -> None:
    base = "SELECT COUNT(DISTINCT company) AS n FROM declarations WHERE year >= 2020"
    frame = _frame(fed, "douane.declarations", "company")
    frame = frame[frame["year"] >= 2020]
    column, value, isolated = _isolating(frame, "company", ["seizure", "inspected", "port"])
    narrowed = f"{base} AND {column} <> {_literal(value)}"
    with fed.client() as client:
        total = client.query(base, project="default")
        assert int(total["n"].iloc[0]) > 0
        with pytest.raises(FederationError) as info:
            client.query(narrowed, project="default")
    channel, analyst = _analyst(fed)
    with channel:
        stored = [j for j in analyst.Jobs(pb.JobsRequest(limit=50)).jobs if j.sql == narrowed]
    assert info.value.rule == RULE
    # The earlier design said "differs by N privacy unit(s)": the difference itself, for free.
    text = str(info.value)
    assert not re.search(r"\d", text), text
    assert str(isolated) not in text
    # What the coordinator keeps of the refused job: its error and each node's reason.
    kept = [j.error for j in stored] + [n.reason for j in stored for n in j.nodes]
    assert stored and any(RULE in k or "differencing" in k for k in kept), kept
    assert not any(re.search(r"\d", k) for k in kept), kept
    reasons = [e["payload"]["reason"] for e in _audit(fed, "douane") if e["kind"] == "refused"]
    assert reasons and not any(re.search(r"\d", r) for r in reasons), reasons


# --------------------------------------------------------------------------- b. one row of a unit that stays


def test_dropping_one_row_of_a_unit_that_stays_is_refused(fed: RunningFederation) -> None:
    frame = _frame(fed, "belastingdienst.vat_returns", "company")  # PostgreSQL source
    frame = frame[frame["year"] >= 2021]
    rows = frame.groupby("company")["turnover"].transform("size")
    unique = frame["turnover"].map(frame["turnover"].value_counts()) == 1
    target = frame[(rows >= 2) & unique].iloc[0]
    base = "SELECT SUM(turnover) AS s, COUNT(DISTINCT company) AS n FROM vat_returns WHERE year >= 2021"
    one_row = f"{base} AND turnover <> {float(target['turnover'])!r}"
    with fed.client() as client:
        total = client.query(base)
        # Every company stays in the cell, so unit sets are equal; only one declared turnover goes.
        with pytest.raises(FederationError) as info:
            client.query(one_row)
    assert int(total["n"].iloc[0]) == frame["company"].nunique()
    assert info.value.rule == RULE


# --------------------------------------------------------------------------- c. another project name


def test_a_refused_query_is_refused_under_another_project(fed: RunningFederation) -> None:
    base = "SELECT COUNT(DISTINCT person) AS n FROM crossings WHERE year >= 2021"
    frame = _frame(fed, "kmar.crossings", "person")
    frame = frame[frame["year"] >= 2021]
    narrowed = f"{base} AND NOT ({_few_rows(frame, 'person', ['airport', 'origin_country', 'flight_type'])})"
    with fed.client() as client:
        client.query(base, project="default")
        with pytest.raises(FederationError) as first:
            client.query(narrowed, project="default")
        with pytest.raises(FederationError) as renamed:
            client.query(narrowed, project="mit-rotterdam")
    assert first.value.rule == RULE and renamed.value.rule == RULE


# --------------------------------------------------------------------------- d. complementary disclosure


def _small_cells(frame: pd.DataFrame, unit: str, column: str) -> pd.Series:
    units = frame.groupby(column)[unit].nunique()
    return units[(units > 0) & (units < M)]


def test_total_minus_released_cells_does_not_recover_a_suppressed_cell(fed: RunningFederation) -> None:
    frame = _frame(fed, "politie.incidents", "person")
    year = next(
        y
        for y in sorted(frame["year"].unique())
        if len(_small_cells(frame[frame["year"] == y], "person", "phenomenon")) >= 1
    )
    cells = frame[frame["year"] == year]
    small = _small_cells(cells, "person", "phenomenon")
    grouped = f"SELECT phenomenon, COUNT(*) AS n FROM incidents WHERE year = {year} GROUP BY phenomenon"
    total = f"SELECT COUNT(*) AS n FROM incidents WHERE year = {year}"
    with fed.client() as client:
        by_phenomenon = client.query(grouped)
        overall = client.query(total)
    hidden = by_phenomenon[by_phenomenon["n"].isna()]
    assert set(small.index) <= set(hidden["phenomenon"]), "the small cells are suppressed"
    # Before: overall - sum(released) gave the suppressed cell's exact count. Now the total, whose
    # complement would be suppressed cells of fewer than M units, is held back.
    assert overall["n"].isna().all(), overall


def test_grouping_after_a_total_suppresses_a_second_cell(fed: RunningFederation) -> None:
    frame = _frame(fed, "politie.incidents", "person")
    year = max(frame["year"].unique())  # the test above uses the first year with a small cell
    cells = frame[frame["year"] == year]
    small = _small_cells(cells, "person", "phenomenon")
    assert len(small) == 1, "one cell below the minimum: the total would recover it exactly"
    total = f"SELECT COUNT(*) AS n FROM incidents WHERE year = {year}"
    grouped = f"SELECT phenomenon, COUNT(*) AS n FROM incidents WHERE year = {year} GROUP BY phenomenon"
    with fed.client() as client:
        overall = client.query(total)
        by_phenomenon = client.query(grouped)
    present = set(cells["phenomenon"].unique())
    hidden = set(by_phenomenon.loc[by_phenomenon["n"].isna(), "phenomenon"]) & present
    assert set(small.index) < hidden, "a second cell is suppressed with the small one"
    # What the subtraction recovers is the suppressed cells together: at least M units.
    recovered = cells[cells["phenomenon"].isin(hidden)]
    assert recovered["person"].nunique() >= M, hidden
    released = int(by_phenomenon["n"].dropna().sum())
    assert int(overall["n"].iloc[0]) - released == len(recovered)


# --------------------------------------------------------------------------- e. secure releases


def test_differencing_through_secure_aggregation_is_refused(fed: RunningFederation) -> None:
    # COUNT(*): a COUNT(DISTINCT) across nodes is answered as a union (docs/distinct.md), not a sum.
    base = "SELECT COUNT(*) AS n FROM signals WHERE year >= 2022"
    frame = _frame(fed, "douane.signals", "company")
    frame = frame[frame["year"] >= 2022]
    narrowed = f"{base} AND NOT ({_few_rows(frame, 'company', ['region', 'phenomenon'])})"
    with fed.client() as client:
        first = client.query(base, secure=True)
        assert "douane" in first.attrs["answered"]
        try:
            second = client.query(narrowed, secure=True)
        except FederationError as exc:  # too few nodes left for the secure sum
            assert exc.rule in (RULE, "secagg_threshold", "secure_min_nodes", "min_nodes"), exc
            refused = [e for e in _audit(fed, "douane") if e["kind"] == "refused"]
            assert refused and refused[-1]["payload"]["rule"] == RULE
            return
    douane = _outcome(second, "douane")
    assert douane["status"] == "refused" and douane.get("rule") == RULE, douane


def test_differencing_through_a_union_of_distinct_counts_is_refused(fed: RunningFederation) -> None:
    # COUNT(DISTINCT) over several nodes is answered as a union of the nodes' units (an overlap
    # job, docs/distinct.md); each node's part is checked as its part of a secure sum.
    base = "SELECT COUNT(DISTINCT company) AS n FROM signals WHERE year <= 2020"
    frame = _frame(fed, "douane.signals", "company")
    frame = frame[frame["year"] <= 2020]
    narrowed = f"{base} AND NOT ({_few_rows(frame, 'company', ['region', 'phenomenon'])})"
    with fed.client() as client:
        first = client.query(base)
        assert first.attrs["distinct"] == "union"
        try:
            second = client.query(narrowed)
        except FederationError as exc:
            assert RULE in str(exc), exc
            return
    douane = _outcome(second, "douane")
    assert douane["status"] == "refused" and douane.get("rule") == RULE, douane
