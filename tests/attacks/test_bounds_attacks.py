"""Attacks through per-query contribution bounds, on real node processes over real gRPC: widening
the declared bounds or rows per unit, raw specs past the SDK, clamping and truncation as a way
around min_group_size in exact releases, and repeated tightened queries against the budget."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from federation.query import parse_query
from nodes.audit import export
from nodes.config import load_node_config
from privacy.auto_bounds import candidates
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

# Exact releases allowed (dp_required = false): an analyst who asks for epsilon gets DP.
NODES = ["douane", "kmar"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("bounds-attacks"),
        postgres_dsn,
        nodes=NODES,
        projects=("attack-widen", "attack-raw", "attack-exact", "attack-figures", "attack-auto"),
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _spent(running: RunningFederation, project: str) -> float:
    with running.client() as c:
        budget = c.budget(project)
    row = budget[(budget["node"] == "douane") & (budget["dataset"] == "declarations")]
    return float(row["spent_epsilon"].iloc[0]) if len(row) else 0.0


def _audit(running: RunningFederation, node: str) -> list[dict]:
    return export(load_node_config(running.paths[node]).state_dir / "audit.log")


def test_widened_bounds_and_rows_are_refused_and_cost_nothing(fed: RunningFederation) -> None:
    project = "attack-widen"
    with fed.client() as c:
        for sql, kwargs in (
            ("SELECT SUM(LEAST(GREATEST(value, -1000000), 2000000)) AS s FROM declarations", {}),
            ("SELECT AVG(LEAST(value, 1e12)) AS s FROM declarations", {}),
            ("SELECT SUM(value) AS s FROM declarations", {"bounds": {"value": (0, 5_000_000)}}),
            ("SELECT COUNT(*) AS n FROM declarations", {"max_rows_per_unit": 10_000}),
        ):
            with pytest.raises(FederationError) as info:
                c.query(sql, epsilon=1.0, project=project, **kwargs)
            assert info.value.rule in ("bounds_outside_declared", "max_rows_outside_declared"), sql
            assert "node douane" in str(info.value)
            # The refusal states the public declaration, never a count or a local name.
            assert "aangegeven_waarde" not in str(info.value) and "kvk_nummer" not in str(info.value)
    assert _spent(fed, project) == 0.0
    refused = [e for e in _audit(fed, "douane") if e["kind"] == "refused"]
    assert {e["payload"]["rule"] for e in refused} >= {"bounds_outside_declared", "max_rows_outside_declared"}


@pytest.mark.parametrize(
    ("lower", "upper", "rule"),
    [
        (5.0, 1.0, "bounds"),
        (math.nan, 10.0, "bounds"),
        (0.0, math.inf, "bounds"),
        (-1.0, 10.0, "bounds_outside_declared"),
    ],
)
def test_raw_specs_past_the_sdk_are_refused(
    fed: RunningFederation, lower: float, upper: float, rule: str
) -> None:
    spec = parse_query("SELECT SUM(value) AS s FROM declarations")
    spec.aggregates[0].bounds.lower = lower
    spec.aggregates[0].bounds.upper = upper
    spec.privacy.epsilon = 1.0
    spec.project = "attack-raw"
    with fed.client() as c:
        response = c._call("Query", pb.QueryRequest(spec=spec))
    assert not response.ok and response.error_rule == rule
    # Malformed bounds may be stopped at the coordinator already; a widening only the node can judge.
    if rule == "bounds_outside_declared":
        assert "douane" in response.error


def test_exact_releases_refuse_clamping_and_truncation_tricks(fed: RunningFederation) -> None:
    """Without noise, SUM at clamp t minus SUM at clamp t' counts the values in between, however few
    units hold them: a way around min_group_size. So an exact release takes the declared bounds."""
    with fed.client() as c:
        for sql, kwargs in (
            ("SELECT SUM(LEAST(value, 1000)) AS s FROM declarations", {}),
            ("SELECT port, SUM(value) AS s FROM declarations GROUP BY port", {"bounds": {"value": (0, 999)}}),
            ("SELECT COUNT(*) AS n FROM declarations", {"max_rows_per_unit": 1}),
        ):
            with pytest.raises(FederationError) as info:
                c.query(sql, project="attack-exact", **kwargs)
            assert info.value.rule == "bounds_need_dp", sql
        exact = c.query("SELECT SUM(value) AS s FROM declarations", project="attack-exact")
    assert "s" not in exact.attrs["noise"]  # the declared bounds: an ordinary exact release


def test_bounding_figures_are_noisy_and_paid_for(fed: RunningFederation) -> None:
    sql = "SELECT SUM(LEAST(GREATEST(value, 0), 10000)) AS s FROM declarations"
    project = "attack-figures"
    with fed.client() as c:
        runs = [c.query(sql, epsilon=0.5, project=project) for _ in range(4)]
    clamped = [r.attrs["bounding"]["values_clamped"]["s"] for r in runs]
    assert all(f["sd"] > 0 for f in clamped)
    assert len({f["value"] for f in clamped}) > 1  # fresh noise on every release
    frame = fed.scenario.frames["douane.declarations"]
    exact = int((frame["value"] > 10000).sum())
    assert any(f["value"] != exact for f in clamped)
    # The figures are inside the query's cost: four queries at 0.5 spend exactly 2.
    assert _spent(fed, project) == pytest.approx(2.0, rel=1e-6)


def test_tightened_queries_spend_the_budget_like_any_other(fed: RunningFederation) -> None:
    """Smaller noise per query, same epsilon per query: repeating tight queries to average the noise
    away runs into the budget exactly as repeating wide ones does."""
    project = "attack-repeat"
    with fed.client() as c:
        budget_total = float(
            c.budget(project).query("node == 'douane' and dataset == 'declarations'")["total_epsilon"].iloc[0]
        )
        answered = 0
        with pytest.raises(FederationError) as info:
            for _ in range(int(budget_total) + 2):
                c.query(
                    "SELECT SUM(value) AS s FROM declarations",
                    epsilon=1.0,
                    project=project,
                    bounds={"value": (0, 100)},
                    max_rows_per_unit=1,
                )
                answered += 1
    assert info.value.rule == "budget"
    assert answered == int(budget_total)
    assert _spent(fed, project) == pytest.approx(budget_total, rel=1e-6)


def test_bounds_chosen_by_dp_are_charged_and_are_no_free_maximum(fed: RunningFederation) -> None:
    """Choosing the clamp looks at the data: an analyst might hope to learn the largest value (or
    to get the answer while spending everything on a "bound") for free. The chosen bound is a DP
    release, charged in the same ledger entry as the answer and only ever a public candidate; a
    share that leaves nothing for the answer, rho, secure aggregation and exact releases are
    refused before any data is read, at no cost."""
    project = "attack-auto"
    with fed.client() as c:
        df = c.query(
            "SELECT SUM(value) AS s, AVG(value) AS m FROM declarations",
            epsilon=1.0,
            project=project,
            bounds="auto",
            bound_share=0.2,
        )
        info = next(d for d in c.dataset_infos() if d.node == "douane" and d.name == "declarations")
    declared = next((col.lower, col.upper) for col in info.columns if col.name == "value")
    chosen = df.attrs["chosen_bounds"]
    assert set(chosen) == {"s", "m"} and set(chosen["s"]) == set(df.attrs["answered"]) == {"douane"}
    for node in df.attrs["answered"]:
        low, high = chosen["s"][node]["bounds"]
        assert chosen["m"][node]["bounds"] == (low, high)  # one choice per column, shared
        assert low == declared[0] and any(math.isclose(high, v) for v in candidates(declared))
        assert chosen["s"][node]["epsilon"] == pytest.approx(0.2)
    # The whole epsilon is charged: the answer's share and the bound's.
    assert _spent(fed, project) == pytest.approx(1.0, rel=1e-6)
    # The node's audit entry records the bounds the answer used: the chosen ones.
    released = [e for e in _audit(fed, "douane") if e["kind"] == "released"][-1]["payload"]
    assert released["bounds"]["s"] == list(chosen["s"]["douane"]["bounds"])

    def raw(share: float, rho: float = 0.0, secure: bool = False) -> pb.QueryResponse:
        spec = parse_query("SELECT SUM(value) AS s FROM declarations")
        spec.aggregates[0].bound_quantile = 0.99
        spec.privacy.bound_share = share
        if rho:
            spec.privacy.rho = rho
        else:
            spec.privacy.epsilon = 1.0
        spec.secure = secure
        spec.project = project
        with fed.client() as c:
            return c._call("Query", pb.QueryRequest(spec=spec))

    for response, rule in (
        (raw(1.0), "bound_share"),
        (raw(1.5), "bound_share"),
        (raw(0.1, rho=0.5), "bound_quantile"),
        (raw(0.1, secure=True), "bound_quantile"),
    ):
        assert not response.ok and response.error_rule == rule, response.error
    with fed.client() as c, pytest.raises(FederationError) as exact:
        c.query("SELECT SUM(value) AS s FROM declarations", project=project, bounds="auto")
    assert exact.value.rule == "bounds_need_dp"
    assert _spent(fed, project) == pytest.approx(1.0, rel=1e-6)
