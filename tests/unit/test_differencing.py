"""The differencing defence for exact releases, over real DuckDB and PostgreSQL sources."""

from __future__ import annotations

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
    STORE_FILE,
    DifferencingGuard,
    DifferencingRefused,
    UnitHasher,
    cell_digests,
    symmetric_difference,
    unit_rows,
)
from nodes.sources import DataSources
from protocols import federation_pb2 as pb
from protocols.errors import ConfigError

MIN = 5
TOTAL = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021"
WITHOUT_MOERDIJK = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021 AND port <> 'Moerdijk'"


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
def small(tmp_path: Path, customs) -> Iterator[tuple[NodeConfig, DataSources]]:
    path = customs.write_csv_node(
        tmp_path, _frame(), policy="dp_required = false", dataset_policy=f"min_group_size = {MIN}"
    )
    config = load_node_config(path)
    sources = DataSources(config)
    yield config, sources
    sources.close()


def _plan(sql: str, config: NodeConfig, customs):
    return customs.plan_for(sql, config)


def test_unit_sets_match_the_released_unit_counts(
    node_config: NodeConfig, duck_sources: DataSources, pg_sources: DataSources, customs
) -> None:
    # Codes mapped to the shared vocabulary, units truncated to max_rows_per_unit, rows without
    # a unit left out: the unit lists must count exactly what the released n_units counts.
    sql = "SELECT port, year, COUNT(*) AS n, SUM(value) AS total FROM declarations WHERE inspected = 1 GROUP BY port, year"
    hasher = UnitHasher(b"k" * 32)
    for sources in (duck_sources, pg_sources):
        plan = customs.plan_for(sql, sources.config)
        width = len(plan.group_columns)
        released = {tuple(r[:width]): int(r[width + 1]) for r in sources.run(plan)}
        cells = cell_digests(plan, unit_rows(plan, sources), hasher)
        assert released and {k: int(d.size) for k, d in cells.items()} == released


def test_filter_that_isolates_three_units_is_refused(small, customs) -> None:
    config, sources = small
    guard = DifferencingGuard(config)
    first = guard.check("job-1", _plan(TOTAL, config, customs), "mit", False, sources)
    assert first is not None
    guard.record(first)
    with pytest.raises(DifferencingRefused) as info:
        guard.check("job-2", _plan(WITHOUT_MOERDIJK, config, customs), "mit", False, sources)
    assert info.value.rule == "differencing" and info.value.node == "douane"
    message = info.value.message
    for needle in ("exact release: differencing check", "differs by 3 privacy unit(s)", "job-1", "mit", "5"):
        assert needle in message, message


def test_dp_release_repeat_and_wide_difference_pass(small, customs) -> None:
    config, sources = small
    guard = DifferencingGuard(config)
    guard.record(guard.check("a", _plan(TOTAL, config, customs), "p", False, sources))
    # With DP the noise and the budget cover it: the check does not apply.
    assert guard.check("b", _plan(WITHOUT_MOERDIJK, config, customs), "p", True, sources) is None
    # The same query again releases the same cells: nothing new to compare, and no new record.
    assert guard.check("c", _plan(TOTAL, config, customs), "p", False, sources) is None
    # Dropping Rotterdam removes 13 units, more than the minimum group size.
    wide = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2021 AND port <> 'Rotterdam'"
    assert guard.check("d", _plan(wide, config, customs), "p", False, sources) is not None
    # Another project has its own record.
    assert guard.check("e", _plan(WITHOUT_MOERDIJK, config, customs), "other", False, sources) is not None


def test_grouped_cells_are_compared_with_earlier_totals(small, customs) -> None:
    config, sources = small
    guard = DifferencingGuard(config)
    only = "SELECT COUNT(*) AS n FROM declarations WHERE port IN ('Rotterdam', 'Moerdijk')"
    guard.record(guard.check("a", _plan(only, config, customs), "p", False, sources))
    grouped = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"
    with pytest.raises(DifferencingRefused) as info:
        guard.check("b", _plan(grouped, config, customs), "p", False, sources)
    assert "group port=Rotterdam differs by 3" in info.value.message


def test_history_is_bounded(tmp_path: Path, customs) -> None:
    path = customs.write_csv_node(
        tmp_path, _frame(), dataset_policy=f"min_group_size = {MIN}\ndifferencing_history = 1"
    )
    config = load_node_config(path)
    sources = DataSources(config)
    try:
        guard = DifferencingGuard(config)
        guard.record(guard.check("a", _plan(TOTAL, config, customs), "p", False, sources))
        other = "SELECT COUNT(*) AS n FROM declarations WHERE port = 'Amsterdam'"
        guard.record(guard.check("b", _plan(other, config, customs), "p", False, sources))
        # Only the last release is kept: the total is forgotten, as docs/security.md says.
        assert guard.check("c", _plan(WITHOUT_MOERDIJK, config, customs), "p", False, sources) is not None
    finally:
        sources.close()


def test_record_holds_keyed_digests_not_unit_ids(small, customs) -> None:
    config, sources = small
    guard = DifferencingGuard(config)
    guard.record(guard.check("a", _plan(TOTAL, config, customs), "p", False, sources))
    guard.close()
    stored = (config.state_dir / STORE_FILE).read_bytes()
    assert b"10000001" not in stored and "10000001".encode("utf-16-le") not in stored
    one, two = UnitHasher(b"a" * 32), UnitHasher(b"b" * 32)
    ids = [f"{10000000 + i:08d}" for i in range(10)]
    assert not np.intersect1d(one.digests(ids), two.digests(ids)).size
    with pytest.raises(ValueError):
        UnitHasher(b"short")


def test_symmetric_difference() -> None:
    a = np.array([1, 2, 3, 5], dtype=np.uint64)
    b = np.array([2, 3, 4], dtype=np.uint64)
    assert symmetric_difference(a, b) == 3
    assert symmetric_difference(a, a) == 0


def test_release_path_refuses_with_the_rule(small, customs) -> None:
    config, _ = small
    path = node_router(NodeContext.open(config))

    def ask(sql: str) -> pb.JobResponse:
        spec = parse_query(sql)
        return path.handle(pb.JobRequest(job_id=uuid.uuid4().hex, query=spec, requested_by="analyst"))

    assert ask(TOTAL).WhichOneof("outcome") == "result"
    refused = ask(WITHOUT_MOERDIJK)
    assert refused.refusal.rule == "differencing"
    assert "exact release: differencing check" in refused.refusal.reason
    # An epsilon makes it a DP release: the check gives way to noise and budget.
    spec = parse_query(WITHOUT_MOERDIJK)
    spec.privacy.epsilon = 1.0
    dp = path.handle(pb.JobRequest(job_id=uuid.uuid4().hex, query=spec, requested_by="analyst"))
    assert dp.WhichOneof("outcome") == "result", dp.refusal.reason


def test_negative_history_is_a_config_error(tmp_path: Path, customs) -> None:
    with pytest.raises(ConfigError) as info:
        customs.config_with(tmp_path, dataset_policy="differencing_history = -1")
    assert "differencing_history" in info.value.message
