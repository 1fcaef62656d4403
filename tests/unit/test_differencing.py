"""The differencing defence for exact releases, over real DuckDB and PostgreSQL sources."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.query import parse_query
from nodes.config import NodeConfig, load_node_config
from nodes.context import NodeContext
from nodes.daemon import node_router
from nodes.differencing import (
    MAYBE,
    REFUSAL,
    RELEASED,
    RULE,
    SHAPE_RULE,
    STORE_FILE,
    Contributions,
    Recorded,
    RowHasher,
    Verdict,
    contribution_rows,
    decide,
)
from nodes.router import JobRouter
from protocols import federation_pb2 as pb
from protocols.errors import ConfigError

MIN = 5
TOTAL = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021"
WITHOUT_MOERDIJK = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021 AND port <> 'Moerdijk'"
BY_PORT = "SELECT port, COUNT(*) AS n FROM declarations WHERE year >= 2021 GROUP BY port"


def _frame() -> pd.DataFrame:
    """40 companies; the three in Moerdijk trade nowhere else, so the filter isolates them."""
    rows = []
    for i in range(40):
        port = "MOE" if i >= 37 else ["RTM", "AMS", "VLI"][i % 3]
        for year in (2021, 2022):
            rows.append(
                {
                    "kvk_nummer": f"{10000000 + i:08d}",
                    "haven": port,
                    "goederen": "drugs",
                    "jaar": year,
                    "geinspecteerd": "J",
                    "waarde_eur": 100.0 + i,
                    "datum": f"{year}-05-01",
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def node(tmp_path: Path, customs) -> Iterator[tuple[NodeConfig, JobRouter]]:
    path = customs.write_csv_node(
        tmp_path,
        _frame(),
        policy="dp_required = false\nrequire_budget = false",
        dataset_policy=f"min_group_size = {MIN}",
    )
    config = load_node_config(path)
    ctx = NodeContext.open(config)
    yield config, node_router(ctx)
    ctx.differencing.close()
    ctx.close()


def _ask(router: JobRouter, sql: str, project: str = "p", epsilon: float = 0.0) -> pb.JobResponse:
    spec = parse_query(sql)
    spec.project = project
    spec.privacy.epsilon = epsilon
    return router.handle(pb.JobRequest(job_id=uuid.uuid4().hex, query=spec, requested_by="analyst"))


def _released(response: pb.JobResponse) -> pb.QueryResult:
    assert response.WhichOneof("outcome") == "result", response.refusal.reason
    return response.result


def _refused(response: pb.JobResponse) -> pb.Refusal:
    assert response.WhichOneof("outcome") == "refusal", "the release went out"
    return response.refusal


def test_contributing_rows_match_the_released_counts(
    node_config: NodeConfig, duck_sources, pg_sources, customs
) -> None:
    # Codes mapped to the shared vocabulary, rows truncated to max_rows_per_unit, rows without a
    # unit left out: the contributing rows must be exactly what the released counts count.
    sql = "SELECT port, year, COUNT(*) AS n, SUM(value) AS total FROM declarations WHERE inspected = 1 GROUP BY port, year"
    hasher = RowHasher(b"k" * 32)
    for sources in (duck_sources, pg_sources):
        plan = customs.plan_for(sql, sources.config)
        width = len(plan.group_columns)
        domain = {tuple(k) for k in plan.keys}  # keys outside the public domain are never released
        released = {
            tuple(r[:width]): (int(r[width]), int(r[width + 1]))
            for r in sources.run(plan)
            if tuple(r[:width]) in domain
        }
        data = hasher.release(plan, contribution_rows(plan, sources))
        counted = {
            tuple(plan.keys[c]): (int((data.cells == c).sum()), data.unit_count(data.cells == c))
            for c in np.unique(data.cells)
        }
        assert released and counted == released
        assert np.unique(data.rows).size == data.rows.size  # equal rows of one unit stay apart


def test_filter_that_isolates_three_units_is_refused_and_says_only_the_rule(node) -> None:
    _, router = node
    _released(_ask(router, TOTAL))
    refusal = _refused(_ask(router, WITHOUT_MOERDIJK))
    assert refusal.rule == RULE and refusal.node == "douane"
    assert refusal.reason == REFUSAL
    assert not any(ch.isdigit() for ch in refusal.reason), "a refusal carries no count"


def test_one_row_of_a_unit_that_stays_in_the_cell_is_caught(node) -> None:
    _, router = node
    total = "SELECT SUM(value) AS s FROM declarations WHERE year >= 2021"
    _released(_ask(router, total))
    # Company 5 keeps its 2021 row: the unit sets are equal, the rows are not.
    one_row = total + " AND NOT (year = 2022 AND value = 105)"
    assert _refused(_ask(router, one_row)).rule == RULE


def test_history_spans_projects(node) -> None:
    _, router = node
    _released(_ask(router, TOTAL, project="one"))
    assert _refused(_ask(router, WITHOUT_MOERDIJK, project="two")).rule == RULE


def test_total_after_a_grouping_with_a_suppressed_cell_is_suppressed(node) -> None:
    _, router = node
    grouped = _released(_ask(router, BY_PORT))
    assert [g.suppressed for g in grouped.groups] == [False, False, False, True]  # Moerdijk: 3 units
    total = _released(_ask(router, TOTAL))
    # The total minus the three released ports would be Moerdijk: the total is held back.
    assert total.groups[0].suppressed and "differencing" in total.groups[0].suppression_rule


def test_grouping_after_a_total_gets_a_second_suppression(node) -> None:
    _, router = node
    total = _released(_ask(router, TOTAL))
    n = int(total.groups[0].cells[0].sum)
    grouped = _released(_ask(router, BY_PORT))
    hidden = [g for g in grouped.groups if g.suppressed]
    assert len(hidden) == 2, "Moerdijk and one more port"
    assert any("differencing" in g.suppression_rule for g in hidden)
    released = sum(int(g.cells[0].sum) for g in grouped.groups if not g.suppressed)
    # What the subtraction gives is the two suppressed ports together: at least MIN units.
    assert n - released >= 2 * MIN
    # The same grouping again is answered the same way.
    again = _released(_ask(router, BY_PORT))
    assert [g.suppressed for g in again.groups] == [g.suppressed for g in grouped.groups]


def _on_record(config: NodeConfig) -> int:
    with sqlite3.connect(config.state_dir / STORE_FILE) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM exact_releases").fetchone()[0])


def test_dp_release_repeat_and_wide_difference_pass(node) -> None:
    config, router = node
    _released(_ask(router, TOTAL))
    # With DP the noise and the budget cover it: the check does not apply.
    _released(_ask(router, WITHOUT_MOERDIJK, epsilon=1.0))
    assert _on_record(config) == 1
    # The same query again releases the same rows: nothing new, and not recorded again, so
    # repeating a query cannot push other releases out of the record.
    assert not _released(_ask(router, TOTAL, project="other")).groups[0].suppressed
    assert _on_record(config) == 1
    # Dropping Rotterdam removes 13 units, more than the minimum group size.
    wide = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021 AND port <> 'Rotterdam'"
    assert not _released(_ask(router, wide)).groups[0].suppressed


def test_a_repeat_over_a_file_source_costs_no_second_scan(tmp_path: Path, customs, monkeypatch) -> None:
    # A file source is copied into memory at start-up and never changes while the node runs, so
    # the fingerprint of a query is computed once; the answer's own scan is all a repeat costs.
    path = customs.write_csv_node(
        tmp_path,
        _frame(),
        policy="dp_required = false\nrequire_budget = false",
        dataset_policy=f"min_group_size = {MIN}",
    )
    ctx = NodeContext.open(load_node_config(path))
    try:
        router = node_router(ctx)
        first = _released(_ask(router, TOTAL))
        scans: list[str] = []
        fetch = ctx.sources.fetch

        def counted(dataset, sql, params):  # the real fetch, counted
            scans.append(sql)
            return fetch(dataset, sql, params)

        monkeypatch.setattr(ctx.sources, "fetch", counted)
        again = _released(_ask(router, TOTAL))
        assert [g.cells[0].count for g in again.groups] == [g.cells[0].count for g in first.groups]
        # Only the answer's own scans: no fingerprint (hash), no contributing rows (md5).
        assert scans and not any("hash(" in sql or "md5(" in sql for sql in scans)
        # A query not on record still runs the whole check against the record.
        assert _refused(_ask(router, WITHOUT_MOERDIJK)).rule == RULE
        assert any("md5(" in sql for sql in scans)
    finally:
        ctx.differencing.close()
        ctx.close()


def test_a_repeat_over_changed_postgres_rows_is_checked_again(
    tmp_path: Path, postgres_dsn: str, customs
) -> None:
    import psycopg

    from tests.unit.conftest import LOCAL_TYPES, toml_text

    schema = f"diff_{uuid.uuid4().hex[:10]}"
    table = f"{schema}.aangiften"
    frame = _frame()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(f"CREATE TABLE {table} ({', '.join(f'{k} {t}' for k, t in LOCAL_TYPES.items())})")
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(LOCAL_TYPES)}) FROM STDIN") as copy,
            ):
                for row in frame[list(LOCAL_TYPES)].itertuples(index=False):
                    copy.write_row(list(row))
            path = tmp_path / "node.toml"
            source = f'kind = "postgres"\ndsn = "{postgres_dsn}"\ntable = "{table}"'
            path.write_text(
                toml_text(source, policy="dp_required = false", dataset_policy=f"min_group_size = {MIN}")
            )
            ctx = NodeContext.open(load_node_config(path))
            try:
                router = node_router(ctx)
                _released(_ask(router, TOTAL))
                _released(_ask(router, TOTAL))  # unchanged rows: the repeat is answered
                # The partner's table changes: one declaration of a company that stays is gone.
                conn.execute(f"DELETE FROM {table} WHERE kvk_nummer = '10000005' AND jaar = 2022")
                assert _refused(_ask(router, TOTAL)).rule == RULE
            finally:
                ctx.close()
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_history_is_bounded(tmp_path: Path, customs) -> None:
    path = customs.write_csv_node(
        tmp_path,
        _frame(),
        policy="dp_required = false",
        dataset_policy=f"min_group_size = {MIN}\ndifferencing_history = 1",
    )
    ctx = NodeContext.open(load_node_config(path))
    router = node_router(ctx)
    try:
        _released(_ask(router, TOTAL))
        _released(_ask(router, "SELECT COUNT(*) AS n FROM declarations WHERE port = 'Amsterdam'"))
        # Only the last release is kept: the total is forgotten, as docs/security.md says.
        _released(_ask(router, WITHOUT_MOERDIJK))
    finally:
        ctx.close()


def test_record_holds_keyed_digests_not_ids_or_values(node) -> None:
    config, router = node
    _released(_ask(router, TOTAL))
    stored = (config.state_dir / STORE_FILE).read_bytes()
    for needle in ("10000001", "Rotterdam", "RTM", "2021-05-01"):
        assert needle.encode() not in stored and needle.encode("utf-16-le") not in stored
    one, two = RowHasher(b"a" * 32), RowHasher(b"b" * 32)
    ids = [f"{10000000 + i:08d}" for i in range(10)]
    assert not np.intersect1d(one.units(ids), two.units(ids)).size
    with pytest.raises(ValueError):
        RowHasher(b"short")


def _release(rows: list[int], units: list[int], cells: list[int], n_cells: int) -> Contributions:
    return Contributions.build(
        np.asarray(rows, dtype=np.uint64),
        np.asarray(units, dtype=np.uint64),
        np.asarray(cells, dtype=np.int32),
        n_cells,
    )


def test_a_margin_over_a_secure_cell_that_may_be_suppressed_needs_dp() -> None:
    # A secure contribution: cells 0 and 1 hold 6 units each, cell 2 holds 2, so the coordinator
    # may have suppressed it.
    ids = list(range(1, 15))
    secure = _release(ids, ids, [0] * 6 + [1] * 6 + [2] * 2, 3)
    recorded = Recorded(1, 1, np.array([RELEASED, RELEASED, MAYBE], dtype=np.int8), secure)
    total = _release(ids, ids, [0] * 14, 1)
    with pytest.raises(Verdict) as info:
        decide(total, np.array([RELEASED], dtype=np.int8), [recorded], 5, 1, can_suppress=False)
    assert info.value.rule == SHAPE_RULE
    # A plain total suppresses itself instead.
    plain = decide(total, np.array([RELEASED], dtype=np.int8), [recorded], 5, 1, can_suppress=True)
    assert list(plain.status) == [1]


def test_negative_history_is_a_config_error(tmp_path: Path, customs) -> None:
    with pytest.raises(ConfigError) as info:
        customs.config_with(tmp_path, dataset_policy="differencing_history = -1")
    assert "differencing_history" in info.value.message
