"""Pooled pandas answers with the same disclosure rules, to compare federated answers against."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pandas as pd

from federation.scenario import Scenario

MIN_GROUP = 10


def pooled(
    scenario: Scenario,
    dataset: str,
    group_by: list[str],
    domains: dict[str, list],
    unit: str,
    aggs: dict[str, tuple[str, str | None]],
    where: Callable[[pd.DataFrame], pd.Series] | None = None,
    nodes: list[str] | None = None,
) -> pd.DataFrame:
    """Per-node groups with the node's suppression rule, then combined across nodes.

    ``aggs`` maps output name -> (function, column) with function in count, count_distinct, sum, avg.
    A group suppressed at any node is suppressed (all values missing) in the result.
    """
    keys = list(itertools.product(*(domains[g] for g in group_by))) if group_by else [()]
    totals = {k: {name: [0.0, 0.0] for name in aggs} for k in keys}
    suppressed: set[tuple] = set()
    for key_name, frame in scenario.frames.items():
        node, name = key_name.split(".")
        if name != dataset or (nodes and node not in nodes):
            continue
        df = frame[frame[unit].notna()]
        if where is not None:
            df = df[where(df)]
        grouped = {k: g for k, g in df.groupby(group_by)} if group_by else {(): df}
        for key in keys:
            g = grouped.get(key if len(key) != 1 else key[0], grouped.get(key))
            if g is None or g[unit].nunique() < MIN_GROUP:
                suppressed.add(key)
                continue
            for out, (fn, col) in aggs.items():
                t = totals[key][out]
                if fn == "count":
                    t[0] += len(g)
                elif fn == "count_distinct":
                    t[0] += g[unit].nunique()
                else:
                    t[0] += float(g[col].sum())
                    t[1] += float(g[col].notna().sum())
    rows = []
    for key in keys:
        row = dict(zip(group_by, key, strict=True))
        for out, (fn, _) in aggs.items():
            s, c = totals[key][out]
            if key in suppressed:
                row[out] = None
            elif fn == "avg":
                row[out] = s / c if c else None
            else:
                row[out] = s
        rows.append(row)
    return pd.DataFrame(rows, columns=group_by + list(aggs))


def assert_same(federated: pd.DataFrame, expected: pd.DataFrame, group_by: list[str]) -> None:
    """Counts equal exactly; sums equal to the cent (the data is in euro cents)."""
    fed = federated.set_index(group_by) if group_by else federated
    exp = expected.set_index(group_by) if group_by else expected
    assert list(fed.index) == list(exp.index)
    for column in exp.columns:
        for key in exp.index:
            want, got = exp.loc[key, column], fed.loc[key, column]
            if want is None or pd.isna(want):
                assert pd.isna(got), f"{column} at {key}: expected suppressed, got {got}"
            else:
                assert not pd.isna(got), f"{column} at {key}: expected {want}, got suppressed"
                assert round(float(got), 2) == round(float(want), 2), f"{column} at {key}: {got} != {want}"
