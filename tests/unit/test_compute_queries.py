"""How many engine queries an exact release costs (nodes/release.py, ``compute``)."""

from __future__ import annotations

from typing import Any

import pytest

from federation.query import parse_query
from nodes import release
from nodes.protect import Budget, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import validate


def test_a_small_file_source_answers_an_exact_release_in_one_query(
    duck_sources: DataSources, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = validate(parse_query("SELECT port, COUNT(*) FROM declarations GROUP BY port"), duck_sources.config)
    assert (duck_sources.known_rows(plan.dataset) or 0) <= release.SMALL_SOURCE_ROWS
    queries: list[bool] = []
    run = duck_sources.run

    def counted(plan: Any, units: bool = True) -> Any:
        queries.append(units)
        return run(plan, units=units)

    monkeypatch.setattr(duck_sources, "run", counted)
    one = compute(plan, duck_sources, exact_release=True)
    assert queries == [True]  # distinct units counted at once
    # As a large source would: the query without distinct units first (then, if a group is
    # small, the full one); the release is the same.
    queries.clear()
    monkeypatch.setattr(release, "SMALL_SOURCE_ROWS", 0)
    two = compute(plan, duck_sources, exact_release=True)
    assert queries[0] is False
    assert protect(plan, one, Budget())[0] == protect(plan, two, Budget())[0]
    assert one.rows
