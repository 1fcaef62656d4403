"""VARIANCE, STDDEV, MEDIAN and PERCENTILE_CONT: parsing, validation, sensitivity, SQL on both
engines against pandas, post-processing, and noise (empirical sd against the stated sd)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coordinator.combine import combine
from federation.query import parse_query
from nodes.config import NodeConfig
from nodes.protect import Budget, Exact, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import Refused, validate
from privacy.dp import PrivacyError, plan_noise, sensitivity, variance_parts
from privacy.statistics import PERCENTILE_BINS, Moments, add_moments, percentile, stddev, variance
from protocols import federation_pb2 as pb
from protocols.errors import QueryError
from tests.unit.test_sqlgen import shared_frame

STATS_SQL = (
    "SELECT port, VARIANCE(value) AS var, STDDEV(value) AS sd, COUNT(*) AS n FROM declarations GROUP BY port"
)
HIST_SQL = "SELECT port, MEDIAN(value) AS med, COUNT(*) AS n FROM declarations GROUP BY port"

# ---------------------------------------------------------------- parsing and validation


def test_statistics_parse_into_their_functions() -> None:
    spec = parse_query(
        "SELECT VARIANCE(value), VAR_SAMP(value) AS v, STDDEV(value), STDDEV_SAMP(value) AS s, "
        "MEDIAN(value), PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY value) FROM declarations"
    )
    got = [(a.function, a.alias, round(a.quantile, 6)) for a in spec.aggregates]
    assert got == [
        (pb.VARIANCE, "variance_value", 0.0),
        (pb.VARIANCE, "v", 0.0),
        (pb.STDDEV, "stddev_value", 0.0),
        (pb.STDDEV, "s", 0.0),
        (pb.PERCENTILE, "median_value", 0.5),
        (pb.PERCENTILE, "p25_value", 0.25),
    ]


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY value) FROM d", "malformed_sql"),
        ("SELECT PERCENTILE_CONT('a') WITHIN GROUP (ORDER BY value) FROM d", "malformed_sql"),
        ("SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY value DESC) FROM d", "unsupported_expression"),
        ("SELECT VAR_POP(value) FROM d", "unsupported_aggregate"),
        ("SELECT CASE WHEN value > 1 THEN 1 END AS x, COUNT(*) FROM d", "unsupported_aggregate"),
    ],
)
def test_bad_statistics_are_refused_by_rule(sql: str, rule: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(sql)
    assert caught.value.rule == rule


def test_unsupported_aggregate_names_what_is_supported() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("SELECT MAX(value) FROM declarations")
    for name in ("VARIANCE", "STDDEV", "MEDIAN", "PERCENTILE_CONT", "DATE_TRUNC", "WIDTH_BUCKET"):
        assert name in caught.value.message


def test_statistics_need_a_numeric_column(node_config: NodeConfig) -> None:
    for sql in ("SELECT VARIANCE(year) FROM declarations", "SELECT MEDIAN(port) FROM declarations"):
        with pytest.raises(Refused) as caught:
            validate(parse_query(sql), node_config)
        assert caught.value.rule == "not_numeric"


def test_statistics_follow_the_policy_operations(tmp_path: Path, customs: Any) -> None:
    config = customs.config_with(tmp_path, dataset_policy='operations = ["count", "sum", "avg"]')
    for sql in ("SELECT STDDEV(value) FROM declarations", "SELECT MEDIAN(value) FROM declarations"):
        with pytest.raises(Refused) as caught:
            validate(parse_query(sql), config)
        assert caught.value.rule == "operation_not_allowed"


def test_a_crafted_quantile_outside_0_1_is_refused(node_config: NodeConfig) -> None:
    spec = parse_query("SELECT MEDIAN(value) FROM declarations")
    spec.aggregates[0].quantile = math.nan
    with pytest.raises(Refused) as caught:
        validate(spec, node_config)
    assert caught.value.rule == "malformed_request"


# ---------------------------------------------------------------- sensitivity and budget split


def test_variance_parts_are_centred_on_the_bounds() -> None:
    shift, centred, squares = variance_parts((0.0, 1000.0))
    assert shift == 500.0 and centred == (-500.0, 500.0) and squares == (0.0, 250_000.0)
    # k rows at the farthest point from the centre: k h and k h^2, not k max|x| and k max x^2.
    assert sensitivity("sum", 3, centred) == (1500.0, 1500.0)
    assert sensitivity("sum", 3, squares) == (750_000.0, 750_000.0)
    assert sensitivity("histogram", 3) == (3.0, 3.0)


def test_plan_noise_splits_the_budget_over_every_part() -> None:
    plan = plan_noise([("variance", (0.0, 1000.0)), ("percentile", (0.0, 1000.0))], 3, epsilon=1.0)
    roles = sorted((c.role, c.spec.kind) for c in plan.components)
    assert roles == sorted(
        [
            ("value", "sum"),
            ("avg_count", "count"),
            ("sum_squares", "sum"),
            ("value", "histogram"),
            ("threshold", "count_distinct"),
        ]
    )
    assert all(math.isclose(c.spec.epsilon, 0.2) for c in plan.components)
    assert math.isclose(plan.cost.epsilon, 1.0, rel_tol=1e-6)
    squares = plan.part("sum_squares", 0)
    assert squares is not None and math.isclose(squares.scale, 750_000.0 / 0.2, rel_tol=1e-6)
    # The histogram is never reused as the threshold count.
    assert plan.threshold.kind == "count_distinct"


def test_statistics_without_bounds_are_refused_by_the_planner() -> None:
    with pytest.raises(PrivacyError) as caught:
        plan_noise([("variance", None)], 3, epsilon=1.0)
    assert caught.value.rule == "bounds"


# ---------------------------------------------------------------- post-processing


def test_variance_from_moments_matches_numpy_and_adds_across_parts() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 100, 400), rng.uniform(20, 60, 300)
    parts = []
    for x, (lo, hi) in ((a, (0.0, 100.0)), (b, (0.0, 80.0))):
        c = (lo + hi) / 2
        parts.append(Moments(len(x), float((x - c).sum()), float(((x - c) ** 2).sum()), c, lo, hi))
    pooled = np.concatenate([a, b])
    total = add_moments(parts)
    assert math.isclose(variance(total).value, float(pooled.var(ddof=1)), rel_tol=1e-9)
    assert math.isclose(stddev(total).value, float(pooled.std(ddof=1)), rel_tol=1e-9)
    assert variance(total).sd == 0.0


def test_variance_is_post_processed_into_its_feasible_range() -> None:
    # Noise that drives S2 below S1^2 / n, or far above its maximum, still gives a feasible value.
    low = variance(Moments(10, 0.0, -500.0, 50.0, 0.0, 100.0, 4.0, 4.0, 4.0))
    high = variance(Moments(10, 0.0, 1e9, 50.0, 0.0, 100.0, 4.0, 4.0, 4.0))
    assert low.value == 0.0 and low.ci_low == 0.0
    cap = 100.0**2 / 4 * 10 / 9
    assert high.value == cap and high.ci_high == cap
    assert math.isnan(variance(Moments(1, 0.0, 0.0, 0.0, 0.0, 1.0)).value)
    assert math.isnan(stddev(Moments(-3, 0.0, 0.0, 0.0, 0.0, 1.0)).value)


def test_percentile_reads_the_histogram_cdf() -> None:
    bins = [0.0] * PERCENTILE_BINS
    bins[10] = 100.0  # every row in [156.25, 171.875) over [0, 1000]
    median = percentile(bins, 0.0, 1000.0, 0.5)
    assert math.isclose(median.value, 1000.0 / 64 * 10.5)
    noisy = [b - 3.0 for b in bins]  # negative noisy counts count as 0
    assert math.isclose(percentile(noisy, 0.0, 1000.0, 0.5).value, 1000.0 / 64 * 10.5)
    assert math.isnan(percentile([0.0] * 4, 0.0, 1.0, 0.5).value)
    wide = percentile(bins, 0.0, 1000.0, 0.5, bin_sd=5.0)
    assert wide.ci_low < median.value < wide.ci_high


# ---------------------------------------------------------------- both engines against pandas


def pandas_statistics(local: pd.DataFrame, config: NodeConfig) -> pd.DataFrame:
    """Per port: the release path's rows (mapped, truncated, clamped) and their statistics."""
    shared = shared_frame(local, config)
    rows = shared[shared.unit.notna()].sort_values(["unit", "port", "value"], na_position="last")
    rows = rows[rows.groupby("unit").cumcount() < config.datasets["declarations"].max_rows_per_unit]
    rows = rows.dropna(subset=["port"])
    v = rows.groupby("port")["value"]
    hist = v.apply(
        lambda x: tuple(np.histogram(x.clip(0, 999.999), bins=PERCENTILE_BINS, range=(0, 1000))[0])
    )
    return pd.DataFrame(
        {"var": v.var(ddof=1), "sd": v.std(ddof=1), "med": v.median(), "n": v.size(), "bins": hist}
    )


def exact_answer(plan_sql: str, sources: DataSources) -> dict[Any, list[float]]:
    plan = validate(parse_query(plan_sql), sources.config)
    result, _ = protect(plan, compute(plan, sources, exact_release=True), Budget())
    rows = combine(parse_query(plan_sql), {"douane": result})
    return {row.key[0].text: [c.value for c in row.cells] for row in rows if not row.suppressed}


def check_against_pandas(got: dict[Any, list[float]], expected: pd.DataFrame) -> None:
    assert set(got) == set(expected.index)
    for port, (var, sd, n) in got.items():
        row = expected.loc[port]
        assert n == row.n
        assert math.isclose(var, row["var"], rel_tol=1e-9)
        assert math.isclose(sd, row["sd"], rel_tol=1e-9)


def exact_histograms(sources: DataSources) -> dict[Any, tuple[int, ...]]:
    """The engine's exact bin counts per port (never released as such: see the next test)."""
    plan = validate(parse_query(HIST_SQL), sources.config)
    exact = compute(plan, sources, exact_release=True)
    return {key[0]: tuple(int(v) for v in figures[2:]) for key, figures in exact.rows.items()}


def test_duckdb_statistics_match_pandas(
    declarations: pd.DataFrame, node_config: NodeConfig, duck_sources: DataSources
) -> None:
    expected = pandas_statistics(declarations, node_config)
    check_against_pandas(exact_answer(STATS_SQL, duck_sources), expected)
    bins = exact_histograms(duck_sources)
    assert bins == {port: expected.loc[port, "bins"] for port in expected.index}
    for port, counts in bins.items():
        # Read off the exact histogram: within one bin of pandas' median.
        assert abs(percentile(counts, 0.0, 1000.0, 0.5).value - expected.loc[port, "med"]) <= 1000 / 64


def test_exact_percentiles_are_refused(node_config: NodeConfig, duck_sources: DataSources) -> None:
    plan = validate(parse_query(HIST_SQL), node_config)
    with pytest.raises(Refused) as caught:
        protect(plan, compute(plan, duck_sources, exact_release=True), Budget())
    assert caught.value.rule == "percentile_needs_dp"
    assert "epsilon" in caught.value.message


@pytest.mark.postgres
def test_postgres_statistics_match_duckdb(
    declarations: pd.DataFrame, duck_sources: DataSources, pg_sources: DataSources
) -> None:
    got = exact_answer(STATS_SQL, pg_sources)
    check_against_pandas(got, pandas_statistics(declarations, pg_sources.config))
    duck = exact_answer(STATS_SQL, duck_sources)
    for port, cells in got.items():
        assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(cells, duck[port], strict=True))
    assert exact_histograms(pg_sources) == exact_histograms(duck_sources)


# ---------------------------------------------------------------- noise


SAMPLE = np.random.default_rng(11).uniform(200, 800, 5000)
HIST = [int(v) for v in np.histogram(SAMPLE, bins=PERCENTILE_BINS, range=(0, 1000))[0]]


def _big_group(node_config: NodeConfig) -> tuple[Any, Exact]:
    """A plan without GROUP BY and exact figures of 5000 rows: the noise tests' fixed input."""
    sql = "SELECT VARIANCE(value) AS var, MEDIAN(value) AS med FROM declarations"
    spec = parse_query(sql)
    spec.no_diagnostics = True  # the fixed figures carry no bounding figures
    plan = validate(spec, node_config)
    x = SAMPLE
    figures = (len(x), 2000, float(x.sum()), len(x), float(((x - 500) ** 2).sum()), *HIST)
    return plan, Exact(rows={(): figures})


def test_noise_on_every_part_has_the_stated_sd(node_config: NodeConfig) -> None:
    plan, exact = _big_group(node_config)
    exact_parts = (float((SAMPLE - 500).sum()), len(SAMPLE), float(((SAMPLE - 500) ** 2).sum()))
    draws: dict[str, list[float]] = {"sum": [], "count": [], "squares": [], "bin": []}
    stated: dict[str, float] = {}
    # Laplace noise has excess kurtosis 3: the sample sd of n draws has a relative sd of about
    # sqrt(5 / n) / 2, so 1,500 draws put the 12% tolerance about four standard errors out.
    for _ in range(1500):
        result, _ = protect(plan, exact, Budget(epsilon=1.0))
        var, med = result.groups[0].cells
        draws["sum"].append(var.sum - exact_parts[0])
        draws["count"].append(var.count - exact_parts[1])
        draws["squares"].append(var.sum_squares - exact_parts[2])
        draws["bin"].extend(m - e for m, e in zip(med.bins, HIST, strict=True))
        stated = {
            "sum": var.noise_sd,
            "count": var.count_noise_sd,
            "squares": var.sum_squares_noise_sd,
            "bin": med.bins_noise_sd,
        }
    for part, values in draws.items():
        assert abs(statistics.mean(values)) < 4 * stated[part] / math.sqrt(len(values)), part
        assert math.isclose(statistics.stdev(values), stated[part], rel_tol=0.12), part


def test_variance_and_median_errors_match_their_stated_sd(node_config: NodeConfig) -> None:
    plan, exact = _big_group(node_config)
    sql = "SELECT VARIANCE(value) AS var, MEDIAN(value) AS med FROM declarations"
    truth = [float(SAMPLE.var(ddof=1)), percentile(HIST, 0.0, 1000.0, 0.5).value]
    errors: list[list[float]] = [[], []]
    sds: list[list[float]] = [[], []]
    covered = [0, 0]
    runs = 300
    for _ in range(runs):
        result, _ = protect(plan, exact, Budget(epsilon=2.0))
        row = combine(parse_query(sql), {"n": result})[0]
        for i, cell in enumerate(row.cells):
            errors[i].append(cell.value - truth[i])
            sds[i].append(cell.noise_sd)
            covered[i] += cell.ci_low <= truth[i] <= cell.ci_high
    for i in range(2):
        assert math.isclose(statistics.stdev(errors[i]), statistics.mean(sds[i]), rel_tol=0.25), i
        assert covered[i] / runs >= 0.9, i


def test_median_interval_covers_the_true_median_whatever_the_rows_within_a_bin(
    node_config: NodeConfig,
) -> None:
    """Rows that sit at the lower edge of their bins: linear interpolation puts the median mid-bin,
    half a bin off, which is more than the noise at this size. The stated interval still covers
    the true median (pandas' ``median``, SQL's PERCENTILE_CONT(0.5)) at least 95% of the time."""
    width = 1000.0 / PERCENTILE_BINS
    edges = np.random.default_rng(5).integers(int(200 / width), int(800 / width), 20_000)
    sample = edges * width + 0.01
    hist = [int(v) for v in np.histogram(sample, bins=PERCENTILE_BINS, range=(0, 1000))[0]]
    sql = "SELECT MEDIAN(value) AS med FROM declarations"
    spec = parse_query(sql)
    spec.no_diagnostics = True
    plan = validate(spec, node_config)
    exact = Exact(rows={(): (len(sample), 2000, *hist)})
    truth = float(np.median(sample))
    runs, covered, noise_only = 300, 0, 0
    for _ in range(runs):
        result, _ = protect(plan, exact, Budget(epsilon=1.0))
        (cell,) = combine(parse_query(sql), {"n": result})[0].cells
        covered += cell.ci_low <= truth <= cell.ci_high
        # The noise alone (value +- 1.96 sd, what the interval was before) misses most of the time.
        noise_only += abs(cell.value - truth) <= 1.96 * cell.noise_sd
        assert cell.ci_high - cell.ci_low <= 4 * width  # still a useful interval
    # 300 draws at p = 0.95 have sd 1.3%: 0.90 is about four standard errors below.
    assert covered / runs >= 0.90
    assert noise_only / runs < 0.5


def test_statistics_take_tighter_bounds_per_query(node_config: NodeConfig, duck_sources: DataSources) -> None:
    sql = (
        "SELECT STDDEV(LEAST(GREATEST(value, 100), 500)) AS sd, "
        "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY LEAST(value, 400)) AS med FROM declarations"
    )
    plan = validate(parse_query(sql), node_config)
    assert [a.bounds for a in plan.aggregates] == [(100.0, 500.0), (0.0, 400.0)]
    # The noise follows the tightened bounds: h = 200 instead of 500 for the centred sum.
    noise = plan_noise([("variance", (100.0, 500.0))], 3, epsilon=1.0)
    assert noise.columns[0].l1 == 3 * 200.0
    # The histogram spans the tightened range, so its bins are 400 / 64 wide.
    exact = compute(plan, duck_sources, exact_release=True)
    (figures,) = exact.rows.values()
    bins = [int(v) for v in figures[5:]]
    assert sum(bins) == figures[3] and len(bins) == PERCENTILE_BINS
