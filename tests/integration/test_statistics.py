"""VARIANCE, STDDEV, MEDIAN and PERCENTILE_CONT over real processes, against pooled pandas.

Exact mode (DuckDB over CSV at douane, PostgreSQL at belastingdienst) must equal pandas to
rounding for VARIANCE and STDDEV. MEDIAN is released only under DP: its interval, widened by the
one bin the interpolation may be off (docs/privacy.md), holds the true median.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from federation import demo_data as vocabulary
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
