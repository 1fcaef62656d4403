"""The analyst's overlap result: patterns, pairwise matrix, at-least counts, the chart, the request."""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path

import pytest

from federation.overlap import (
    OverlapResult,
    aggregate_frame,
    build_request,
    parse_where,
    result_from_response,
)
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.psi import run_in_memory
from protocols.spec_limits import MAX_OVERLAP_PARTIES, check_spec

SETS = {
    "douane.declarations": {f"{10_000_000 + i}" for i in range(0, 60)},
    "belastingdienst.vat_returns": {f"{10_000_000 + i}" for i in range(30, 120)},
    "politie.incidents": {f"{10_000_000 + i}" for i in range(50, 70)} | {"99999999"},
}
NAMES = list(SETS)


@pytest.fixture(scope="module")
def result() -> OverlapResult:
    psi = run_in_memory({k: sorted(v) for k, v in SETS.items()}, job_id="unit-overlap")
    return OverlapResult(datasets=NAMES, counts={p: float(c) for p, c in psi.patterns.items()}, job_id="j")


def test_patterns_cover_every_pattern_and_match_the_sets(result: OverlapResult) -> None:
    df = result.patterns
    assert len(df) == 2 ** len(NAMES) - 1
    assert list(df.columns) == [*NAMES, "n_datasets", "count"]
    everyone = set().union(*SETS.values())
    for _, row in df.iterrows():
        inside = [n for n in NAMES if row[n]]
        expected = sum(
            1
            for x in everyone
            if all(x in SETS[n] for n in inside) and not any(x in SETS[n] for n in NAMES if n not in inside)
        )
        assert row["count"] == expected, inside
        assert row["n_datasets"] == len(inside)
    assert df["count"].is_monotonic_decreasing


def test_pairwise_at_least_and_held_by_all(result: OverlapResult) -> None:
    matrix = result.pairwise
    for a, b in combinations(NAMES, 2):
        assert matrix.loc[a, b] == matrix.loc[b, a] == len(SETS[a] & SETS[b])
    for name in NAMES:
        assert matrix.loc[name, name] == len(SETS[name]) == result.set_sizes[name]
    counts = {}
    for x in set().union(*SETS.values()):
        held = sum(x in s for s in SETS.values())
        counts[held] = counts.get(held, 0) + 1
    assert result.at_least(1) == sum(counts.values())
    assert result.at_least(2) == counts.get(2, 0) + counts.get(3, 0)
    assert result.at_least(3) == counts.get(3, 0) == 10
    assert result.held_by_all(NAMES[:2]) == len(SETS[NAMES[0]] & SETS[NAMES[1]])
    assert result.exact and "exact" in repr(result)


@pytest.mark.parametrize("k", [0, 4, -1, True, 1.5])
def test_at_least_outside_the_datasets_is_refused(result: OverlapResult, k: object) -> None:
    with pytest.raises(FederationError) as info:
        result.at_least(k)  # type: ignore[arg-type]
    assert info.value.rule == "threshold"


def test_pattern_over_unknown_datasets_is_refused() -> None:
    with pytest.raises(FederationError) as info:
        OverlapResult(datasets=["a.x", "b.y"], counts={frozenset({"a.x", "c.z"}): 3.0})
    assert info.value.rule == "malformed_result"
    with pytest.raises(FederationError) as info:
        OverlapResult(datasets=["a.x", "b.y"], counts={frozenset({"a.x"}): 1.0}).held_by_all(["c.z"])
    assert info.value.rule == "unknown_dataset"


def test_plot_writes_a_png(result: OverlapResult, tmp_path: Path) -> None:
    path = result.plot(tmp_path / "charts" / "overlap.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_noisy_result_plots_and_reports_its_noise(tmp_path: Path) -> None:
    noisy = OverlapResult(
        datasets=["a.x", "b.y"],
        counts={frozenset({"a.x"}): 40.0, frozenset({"b.y"}): -2.0, frozenset({"a.x", "b.y"}): 7.0},
        epsilon=1.0,
        noise_sd=2.83,
        ci_half_width=5.0,
    )
    assert not noisy.exact and "epsilon 1" in repr(noisy)
    assert noisy.pairwise.loc["b.y", "b.y"] == 5
    assert noisy.patterns.attrs["epsilon"] == 1.0
    assert noisy.plot(tmp_path / "noisy.png").stat().st_size > 5_000


def test_request_carries_filters_epsilon_and_the_base_first() -> None:
    request = build_request(
        "Company",
        ["douane.declarations", "vat_returns"],
        where={"douane.declarations": "port = 'Rotterdam' AND year = 2023"},
        epsilon=0.5,
        project="mit-7",
        aggregate=("goods_category", "value"),
    )
    spec = request.spec
    assert spec.on == "company" and spec.project == "mit-7" and spec.privacy.epsilon == 0.5
    assert [(d.node, d.dataset) for d in spec.datasets] == [("douane", "declarations"), ("", "vat_returns")]
    assert spec.datasets[0].filter.WhichOneof("kind") == "all_of"
    assert not spec.datasets[1].HasField("filter")
    assert spec.aggregate.group_by == "goods_category" and spec.aggregate.sum == "value"
    assert parse_where("port IN ('Rotterdam', 'Moerdijk')").in_list.column == "port"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"on": "", "datasets": ["a.x", "b.y"]}, "malformed_request"),
        ({"on": "company", "datasets": ["a.x"]}, "malformed_request"),
        ({"on": "company", "datasets": "a.x"}, "malformed_request"),
        ({"on": "company", "datasets": ["a.x", "A.X"]}, "malformed_request"),
        ({"on": "company", "datasets": ["a.x", "b.y"], "where": {"c.z": "year = 1"}}, "malformed_request"),
        ({"on": "company", "datasets": ["a.x", "b.y"], "where": {"a.x": "year = "}}, "malformed_sql"),
        (
            {"on": "company", "datasets": ["a.x", "b.y"], "where": {"a.x": "year = 1 GROUP BY year"}},
            "malformed_sql",
        ),
        ({"on": "company", "datasets": ["a.x", "b.y"], "where": {"a.x": "  "}}, "malformed_sql"),
        ({"on": "company", "datasets": ["a.x", "b.y"], "epsilon": 0}, "privacy_request"),
        ({"on": "company", "datasets": ["a.x", "b.y"], "aggregate": ("", "value")}, "malformed_request"),
    ],
)
def test_bad_requests_name_their_rule(kwargs: dict, rule: str) -> None:
    with pytest.raises(FederationError) as info:
        build_request(**kwargs)
    assert info.value.rule == rule, str(info.value)


def test_overlap_takes_up_to_the_cap_and_refuses_past_it_by_rule() -> None:
    names = [f"n{i:02d}.signals" for i in range(MAX_OVERLAP_PARTIES + 1)]
    request = build_request("company", names[:MAX_OVERLAP_PARTIES])
    assert len(request.spec.datasets) == MAX_OVERLAP_PARTIES == 12
    check_spec(request.spec)  # the check the coordinator and every node run on the spec
    with pytest.raises(FederationError) as info:
        build_request("company", names)
    assert info.value.rule == "too_many_parties"
    assert "at most 12 datasets" in info.value.message and "names 13" in info.value.message
    request.spec.datasets.add(node="n12", dataset="signals")
    with pytest.raises(FederationError) as info:
        check_spec(request.spec, node="douane")
    assert (info.value.rule, info.value.node) == ("too_many_parties", "douane")


def test_twelve_party_views_equal_a_pattern_by_pattern_sum() -> None:
    """2^12 - 1 noisy patterns: pairwise, set sizes and at_least equal the plain sums over patterns."""
    names = [f"n{i:02d}.signals" for i in range(MAX_OVERLAP_PARTIES)]
    rng = random.Random(12)
    counts = {
        frozenset(m): float(rng.randint(-3, 40))
        for k in range(1, len(names) + 1)
        for m in combinations(names, k)
    }
    # As the coordinator sends them: one bit per dataset instead of the names, 2^12 - 1 patterns.
    response = pb.OverlapResponse(job_id="j12", ok=True, datasets=names)
    for pattern, value in counts.items():
        response.patterns.add(members=sum(1 << names.index(n) for n in pattern), count=value)
    assert response.ByteSize() < 64 * 1024
    result = result_from_response(response)
    assert result.counts == counts
    assert len(result.patterns) == 4095
    matrix = result.pairwise
    for a, b in [(names[0], names[0]), (names[0], names[11]), (names[5], names[7])]:
        assert matrix.loc[a, b] == sum(int(v) for p, v in counts.items() if a in p and b in p), (a, b)
    assert (matrix.to_numpy() == matrix.to_numpy().T).all()
    assert result.set_sizes == {n: int(matrix.loc[n, n]) for n in names}
    assert result.at_least(11) == sum(int(v) for p, v in counts.items() if len(p) >= 11)


def test_responses_become_results_or_refusals() -> None:
    response = pb.OverlapResponse(job_id="j1", ok=True, datasets=["a.x", "b.y"], epsilon=1.0, noise_sd=2.0)
    response.patterns.add(datasets=["a.x"], count=5)
    response.patterns.add(datasets=["a.x", "b.y"], count=3)
    response.parties.add(dataset="a.x", node="a", malformed=-1)
    response.parties.add(dataset="b.y", node="b", malformed=4)
    got = result_from_response(response)
    assert got.at_least(2) == 3 and got.malformed == {"a.x": None, "b.y": 4} and got.epsilon == 1.0
    refused = pb.OverlapResponse(ok=False, error="node a refused", error_rule="set_too_small")
    with pytest.raises(FederationError) as info:
        result_from_response(refused)
    assert info.value.rule == "set_too_small"
    outside = pb.OverlapResponse(job_id="j3", ok=True, datasets=["a.x", "b.y"])
    outside.patterns.add(members=0b100, count=1)
    with pytest.raises(FederationError) as info:
        result_from_response(outside)
    assert info.value.rule == "malformed_result"

    sums = pb.OverlapResponse(job_id="j2", ok=True, group_by="goods_category", datasets=["a.x", "b.y"])
    sums.groups.add(key=pb.Value(text="fruit"), count=4, sum=1200.5)
    sums.groups.add(key=pb.Value(text="other"), count=0, sum=0)
    df = aggregate_frame(sums, "value")
    assert list(df.columns) == ["goods_category", "count", "sum"]
    assert df.iloc[0].tolist() == ["fruit", 4, 1200.5] and df.attrs["epsilon"] is None
