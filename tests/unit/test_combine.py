"""Combining per-node protected results at the coordinator (coordinator/combine.py)."""

from __future__ import annotations

import math

import pytest

from coordinator.combine import Z95, combine
from federation.query import parse_query
from privacy.suppression import ThresholdNoise, combined_threshold
from protocols import federation_pb2 as pb
from protocols.values import from_value, to_value

SPEC = parse_query(
    "SELECT port, COUNT(*), COUNT(DISTINCT company), SUM(value), AVG(value) FROM declarations GROUP BY port"
)
PORTS = ["Rotterdam", "Amsterdam", "Moerdijk"]


def group(key: list[object], cells: list[tuple[float, float]], rule: str = "") -> pb.GroupResult:
    g = pb.GroupResult(key=[to_value(k) for k in key])
    if rule:
        g.suppressed = True
        g.suppression_rule = rule
        g.cells.extend(pb.Cell() for _ in cells)
    else:
        g.cells.extend(pb.Cell(sum=s, count=c) for s, c in cells)
    return g


def answer(*groups: pb.GroupResult) -> pb.QueryResult:
    return pb.QueryResult(groups=list(groups))


def node_answer(
    rows: dict[str, tuple[int, int, float, int]], suppressed: dict[str, str] | None = None
) -> pb.QueryResult:
    """One node's full-domain answer; ``rows`` holds (n_rows, n_units, sum, count) per port."""
    suppressed = suppressed or {}
    out = pb.QueryResult()
    for port in PORTS:
        n, units, total, count = rows.get(port, (0, 0, 0.0, 0))
        cells = [(n, n), (units, units), (total, count), (total, count)]
        out.groups.append(group([port], cells, suppressed.get(port, "")))
    return out


def values(row: pb.CombinedRow) -> list[float]:
    return [c.value for c in row.cells]


def by_port(rows: list[pb.CombinedRow]) -> dict[str, pb.CombinedRow]:
    return {from_value(r.key[0]): r for r in rows}


def test_counts_and_sums_add_and_avg_is_total_over_total() -> None:
    answers = {
        "douane": node_answer({"Rotterdam": (12, 10, 10.0, 1), "Amsterdam": (20, 15, 400.0, 20)}),
        "fiod": node_answer({"Rotterdam": (30, 25, 300.0, 10), "Amsterdam": (10, 10, 100.0, 10)}),
    }
    rows = combine(SPEC, answers)
    assert [from_value(r.key[0]) for r in rows] == PORTS
    rotterdam, amsterdam = by_port(rows)["Rotterdam"], by_port(rows)["Amsterdam"]
    # AVG is 310 / 11, not the mean of the node means (10 and 30).
    assert values(rotterdam) == [42.0, 35.0, 310.0, pytest.approx(310.0 / 11)]
    assert values(rotterdam)[3] != pytest.approx(20.0)
    assert values(amsterdam) == [30.0, 25.0, 500.0, pytest.approx(500.0 / 30)]
    assert not rotterdam.suppressed and list(rotterdam.suppressed_by) == []
    # Exact answers carry no noise: the interval collapses onto the value.
    for cell in rotterdam.cells:
        assert (cell.noise_sd, cell.ci_low, cell.ci_high) == (0.0, cell.value, cell.value)


def test_group_suppressed_at_one_node_is_suppressed_in_the_combined_row() -> None:
    rule = "min_group_size: fewer than 10 units"
    answers = {
        "douane": node_answer({"Rotterdam": (50, 40, 900.0, 50), "Amsterdam": (50, 40, 900.0, 50)}),
        "politie": node_answer(
            {"Rotterdam": (50, 40, 900.0, 50)}, suppressed={"Amsterdam": rule, "Moerdijk": rule}
        ),
        "kmar": node_answer(
            {"Rotterdam": (50, 40, 900.0, 50), "Amsterdam": (50, 40, 900.0, 50)}, {"Moerdijk": rule}
        ),
    }
    rows = by_port(combine(SPEC, answers))
    amsterdam = rows["Amsterdam"]
    assert amsterdam.suppressed
    assert list(amsterdam.suppressed_by) == [f"politie: {rule}"]
    # Nothing of the other nodes' part is released either.
    assert len(amsterdam.cells) == len(SPEC.aggregates)
    assert all(c.suppressed and c.value == 0.0 for c in amsterdam.cells)
    # Every suppressing node is named, in a stable order.
    assert list(rows["Moerdijk"].suppressed_by) == [f"kmar: {rule}", f"politie: {rule}"]
    assert not rows["Rotterdam"].suppressed
    assert values(rows["Rotterdam"])[:3] == [150.0, 120.0, 2700.0]


def test_noise_variances_add() -> None:
    spec = parse_query("SELECT COUNT(*), SUM(value), AVG(value) FROM declarations")
    a = pb.GroupResult(
        cells=[
            pb.Cell(sum=10, count=10, noise_sd=3.0),
            pb.Cell(sum=100, count=100, noise_sd=3.0),
            pb.Cell(sum=100, count=10, noise_sd=3.0, count_noise_sd=2.0),
        ]
    )
    b = pb.GroupResult(
        cells=[
            pb.Cell(sum=20, count=20, noise_sd=4.0),
            pb.Cell(sum=200, count=200, noise_sd=4.0),
            pb.Cell(sum=200, count=30, noise_sd=4.0, count_noise_sd=1.0),
        ]
    )
    (row,) = combine(spec, {"om": answer(a), "fiod": answer(b)})
    count, total, avg = row.cells
    assert (count.value, count.noise_sd) == (30.0, 5.0)
    assert (total.value, total.noise_sd) == (300.0, 5.0)
    assert avg.value == pytest.approx(300.0 / 40)
    # Delta method: var(S/C) ~ var_S / C^2 + S^2 var_C / C^4 = 25/1600 + 90000*5/40^4.
    assert avg.noise_sd == pytest.approx(math.sqrt(25 / 1600 + 90000 * 5 / 40**4))
    assert (total.ci_low, total.ci_high) == pytest.approx((300 - Z95 * 5, 300 + Z95 * 5))


def test_avg_over_zero_count_is_nan() -> None:
    spec = parse_query("SELECT AVG(value) FROM declarations")
    (row,) = combine(spec, {"om": answer(group([], [(0.0, 0.0)]))})
    assert math.isnan(row.cells[0].value)


def test_integer_keys_and_single_node() -> None:
    spec = parse_query("SELECT year, COUNT(*) FROM declarations GROUP BY year")
    result = answer(group([2022], [(7, 7)]), group([2023], [(9, 9)]))
    rows = combine(spec, {"kmar": result})
    assert [(r.key[0].integer, values(r)) for r in rows] == [(2022, [7.0]), (2023, [9.0])]


def test_no_answers_gives_no_rows() -> None:
    assert combine(SPEC, {}) == []


# --------------------------------------------------------------------------- combined suppression


def dp_answer(units: dict[str, float], scale: float = 20.0, min_group_size: int = 10) -> pb.QueryResult:
    """A DP node's full-domain answer that leaves suppression to the coordinator: every port with
    its noisy unit count (here the COUNT(DISTINCT company) cell) as threshold count."""
    out = pb.QueryResult(
        threshold=pb.Threshold(
            kind="count_distinct",
            mechanism="laplace",
            scale=scale,
            per_unit=1,
            min_group_size=min_group_size,
            suppression="combined",
        )
    )
    for port in PORTS:
        u = units.get(port, 0.0)
        g = group([port], [(3 * u, 3 * u), (u, u), (10 * u, u), (10 * u, u)])
        g.threshold_count = u
        out.groups.append(g)
    return out


def test_suppression_is_decided_once_on_the_summed_noisy_count() -> None:
    """Amsterdam has 60 units at each of six nodes, each below a node's own threshold (125 for
    b = 20) but 360 together: released. Moerdijk has 9 at one node: suppressed, once, by the
    combined rule with the threshold calibrated to six summed noises."""
    nodes = ["douane", "fiod", "kmar", "om", "politie", "belastingdienst"]
    answers = {n: dp_answer({"Rotterdam": 400.0, "Amsterdam": 60.0}) for n in nodes}
    answers["douane"] = dp_answer({"Rotterdam": 400.0, "Amsterdam": 60.0, "Moerdijk": 9.0})
    threshold = combined_threshold(10, [ThresholdNoise("laplace", 20.0)] * 6)
    assert 125 < threshold < 360
    rows = by_port(combine(SPEC, answers))
    assert not rows["Amsterdam"].suppressed and values(rows["Amsterdam"])[1] == 360.0
    assert not rows["Rotterdam"].suppressed
    assert rows["Moerdijk"].suppressed
    assert list(rows["Moerdijk"].suppressed_by) == [
        f"combined: min_group_size: summed noisy unit count below {threshold}"
    ]


def test_the_strictest_minimum_size_among_answering_nodes_decides() -> None:
    def two(fiod_min: int = 10) -> dict[str, pb.QueryResult]:
        return {
            "om": dp_answer({"Amsterdam": 100.0}, scale=5.0),
            "fiod": dp_answer({"Amsterdam": 100.0}, scale=5.0, min_group_size=fiod_min),
        }

    parts = [ThresholdNoise("laplace", 5.0)] * 2
    assert combined_threshold(10, parts) < 200 < combined_threshold(170, parts)
    assert not by_port(combine(SPEC, two()))["Amsterdam"].suppressed
    assert by_port(combine(SPEC, two(fiod_min=170)))["Amsterdam"].suppressed
    # An exact-mode node's minimum size (from its DatasetInfo) counts too, when it answered.
    assert by_port(combine(SPEC, two(), {"om": 10, "fiod": 190}))["Amsterdam"].suppressed
    assert not by_port(combine(SPEC, two(), {"om": 10, "kmar": 200}))["Amsterdam"].suppressed


def test_a_node_that_suppresses_itself_still_blanks_the_combined_row() -> None:
    """Policy ``suppression = "node"``: that node's own decision still suppresses the whole row."""
    rule = "min_group_size: noisy unit count below 134"
    own = dp_answer({"Amsterdam": 500.0})
    own.threshold.suppression = "node"
    amsterdam = own.groups[1]
    amsterdam.suppressed, amsterdam.suppression_rule = True, rule
    del amsterdam.cells[:]
    amsterdam.cells.extend(pb.Cell() for _ in SPEC.aggregates)
    rows = by_port(combine(SPEC, {"om": dp_answer({"Amsterdam": 500.0}), "kmar": own}))
    assert rows["Amsterdam"].suppressed
    assert list(rows["Amsterdam"].suppressed_by) == [f"kmar: {rule}"]
