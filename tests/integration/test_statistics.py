"""VARIANCE, STDDEV, MEDIAN and PERCENTILE_CONT over real processes, against pooled pandas.

Exact mode (DuckDB over CSV at douane, PostgreSQL at belastingdienst) must equal pandas to
rounding for VARIANCE and STDDEV. MEDIAN is released only under DP: its interval, widened by the
one bin the interpolation may be off (docs/privacy.md), holds the true median.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from federation import scenario as vocabulary
from privacy.statistics import PERCENTILE_BINS
from tests.integration.expected import MIN_GROUP


def _pooled(frame: pd.DataFrame, group: str, column: str) -> pd.DataFrame:
    released = (
        frame[frame["company"].notna()].groupby(group).filter(lambda g: g["company"].nunique() >= MIN_GROUP)
    )
    v = released.groupby(group)[column]
    return pd.DataFrame({"var": v.var(ddof=1), "sd": v.std(ddof=1), "n": v.size()})


@pytest.mark.parametrize(
    ("dataset", "group", "column", "node", "domain"),
    [
        ("declarations", "port", "value", "douane", vocabulary.PORTS),
        ("vat_returns", "sector", "turnover", "belastingdienst", vocabulary.SECTORS),
    ],
    ids=["duckdb-csv", "postgres"],
)
def test_exact_variance_and_stddev_equal_pooled_pandas(
    fed, federation, dataset: str, group: str, column: str, node: str, domain: tuple
) -> None:
    sql = (
        f"SELECT {group}, VARIANCE({column}) AS var, STDDEV({column}) AS sd, COUNT(*) AS n "
        f"FROM {dataset} GROUP BY {group}"
    )
    df = fed.query(sql).set_index(group)
    assert df.attrs["answered"] == [node]
    expected = _pooled(federation.scenario.frames[f"{node}.{dataset}"], group, column)
    assert set(df.index) == set(domain)
    released = df[df["n"].notna()]
    assert set(released.index) == set(expected.index) and len(released) >= 2
    for key, row in expected.iterrows():
        got = released.loc[key]
        assert int(got["n"]) == row["n"]
        assert math.isclose(float(got["var"]), row["var"], rel_tol=1e-9)
        assert math.isclose(float(got["sd"]), row["sd"], rel_tol=1e-9)


def test_exact_median_is_refused(fed) -> None:
    from protocols.errors import FederationError

    with pytest.raises(FederationError) as caught:
        fed.query("SELECT MEDIAN(value) AS med FROM declarations")
    assert caught.value.rule == "percentile_needs_dp" and "douane" in str(caught.value)


def test_dp_median_lies_in_its_stated_interval(fed, federation) -> None:
    sql = "SELECT MEDIAN(value) AS med, STDDEV(value) AS sd FROM declarations"
    df = fed.query(sql, epsilon=5.0, project="statistics")
    frame = federation.scenario.frames["douane.declarations"]
    truth = float(frame["value"].median())
    noise = df.attrs["noise"]["med"][0]
    lo, hi = noise["ci95"]
    width = 2_000_000 / PERCENTILE_BINS
    assert lo - width <= truth <= hi + width
    assert lo <= float(df["med"].iloc[0]) <= hi
    assert df.attrs["noise"]["sd"][0]["sd"] > 0
    sd_lo, sd_hi = df.attrs["noise"]["sd"][0]["ci95"]
    assert 0 <= sd_lo <= sd_hi


def _pooled_counts(frame: pd.DataFrame, key: pd.Series, unit: str) -> dict:
    rows = frame.assign(k=key)[frame[unit].notna()]
    released = rows.groupby("k").filter(lambda g: g[unit].nunique() >= MIN_GROUP)
    return {(k.item() if hasattr(k, "item") else k): int(n) for k, n in released.groupby("k").size().items()}


@pytest.mark.parametrize(
    ("dataset", "node", "key_sql", "key"),
    [
        (
            "declarations",
            "douane",
            "FLOOR(value / 100000) * 100000",
            lambda f: (f["value"] // 100000) * 100000,
        ),
        ("vat_returns", "belastingdienst", "WIDTH_BUCKET(turnover, 0, 1000000, 4)", None),
        ("declarations", "douane", "DATE_TRUNC('quarter', date)", None),
        ("incidents", "politie", "EXTRACT(YEAR FROM date)", lambda f: pd.to_datetime(f["date"]).dt.year),
    ],
    ids=["floor-duckdb", "width-bucket-postgres", "date-trunc", "extract-year"],
)
def test_exact_histogram_and_date_keys_equal_pooled_pandas(
    fed, federation, dataset, node, key_sql, key
) -> None:
    frame = federation.scenario.frames[f"{node}.{dataset}"]
    if key is None and "WIDTH_BUCKET" in key_sql:
        t = frame["turnover"]
        key = lambda f: np.where(t < 0, 0, np.where(t >= 1e6, 5, np.floor(t * 4 / 1e6) + 1))  # noqa: E731
    elif key is None:
        key = lambda f: pd.to_datetime(f["date"]).dt.to_period("Q").dt.start_time.dt.strftime("%Y-%m-%d")  # noqa: E731
    df = fed.query(f"SELECT {key_sql} AS k, COUNT(*) AS n FROM {dataset} GROUP BY k")
    assert df.attrs["answered"] == [node]
    got = {k: int(n) for k, n in zip(df["k"], df["n"], strict=True) if not pd.isna(n)}
    expected = _pooled_counts(frame, key(frame), "person" if dataset == "incidents" else "company")
    assert got == expected and len(got) >= 2


def test_having_order_by_and_limit_run_on_the_released_figures(fed) -> None:
    base = (
        "SELECT goods_category, COUNT(*) AS n, SUM(value) AS total FROM declarations GROUP BY goods_category"
    )
    full = fed.query(base)
    df = fed.query(f"{base} HAVING COUNT(*) >= 20 ORDER BY total DESC, goods_category LIMIT 3")
    expected = (
        full[full["n"].fillna(0) >= 20]
        .sort_values(["total", "goods_category"], ascending=[False, True])
        .head(3)
        .reset_index(drop=True)
    )
    assert len(expected) >= 2
    pd.testing.assert_frame_equal(df, expected)
    assert df.attrs["post_processing"] == {
        "having": "COUNT(*) >= 20",
        "order_by": "total DESC, goods_category",
        "limit": "3",
    }
