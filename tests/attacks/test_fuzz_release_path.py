"""Fuzzing the node's release path: arbitrary wire bytes and arbitrary specs give a refusal or a
protected answer, never a crash, and never a released cell below the minimum group size."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.daemon import node_router
from nodes.router import JobRouter
from protocols import federation_pb2 as pb

CONFIG = """
[node]
id = "douane"
insecure = true
state_dir = "state"
[policy]
min_group_size = 5
dp_required = false
[[datasets]]
name = "declarations"
privacy_unit = "company"
max_rows_per_unit = 3
[datasets.source]
kind = "csv"
path = "decl.csv"
[[datasets.columns]]
name = "company"
local = "kvk"
kind = "identifier"
id_type = "kvk"
[[datasets.columns]]
name = "port"
local = "haven"
kind = "category"
domain = ["Rotterdam", "Amsterdam"]
codes = { RTM = "Rotterdam", AMS = "Amsterdam" }
[[datasets.columns]]
name = "value"
kind = "numeric"
bounds = [0, 100]
[[datasets.columns]]
name = "year"
kind = "category"
domain = [2022, 2023]
"""


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> JobRouter:
    root = tmp_path_factory.mktemp("fuzz")
    rows = [
        {
            "kvk": f"{30000000 + i % 40}",
            "haven": ["RTM", "AMS", "XXX"][i % 3],
            "value": i % 120,
            "year": 2022 + i % 2,
        }
        for i in range(200)
    ]
    pd.DataFrame(rows).to_csv(root / "decl.csv", index=False)
    (root / "node.toml").write_text(CONFIG)
    config = load_node_config(root / "node.toml")
    return node_router(NodeContext.open(config, signed=False))


def _check(response: pb.JobResponse) -> None:
    kind = response.WhichOneof("outcome")
    assert kind in {"result", "refusal", "budget"}
    if kind == "refusal":
        assert response.refusal.rule and response.refusal.reason
    if kind == "result":
        for group in response.result.groups:
            if group.suppressed:
                assert all(c.sum == 0 and c.count == 0 for c in group.cells)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_arbitrary_bytes(release: JobRouter, data: bytes) -> None:
    try:
        job = pb.JobRequest.FromString(data)
    except DecodeError:
        return  # the transport refuses what does not decode
    _check(release.handle(job))


names = st.sampled_from(
    ["port", "year", "value", "company", "kvk", "haven", "nope", "", "port\x00", "' OR 1=1 --"]
)
values = st.one_of(
    st.builds(pb.Value, text=st.text(max_size=20)),
    st.builds(pb.Value, integer=st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.builds(pb.Value, real=st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(pb.Value, text=st.sampled_from(["Rotterdam", "Amsterdam", "2023-01-01"])),
    st.builds(pb.Value, integer=st.sampled_from([2022, 2023])),
)
leaves = st.one_of(
    st.builds(
        lambda c, o, v: pb.Filter(compare=pb.Comparison(column=c, op=o, value=v)),
        names,
        st.integers(min_value=0, max_value=7),
        values,
    ),
    st.builds(
        lambda c, vs, n: pb.Filter(in_list=pb.InList(column=c, values=vs, negated=n)),
        names,
        st.lists(values, max_size=4),
        st.booleans(),
    ),
    st.builds(
        lambda c, lo, hi: pb.Filter(between=pb.Between(column=c, low=lo, high=hi)), names, values, values
    ),
)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda xs: pb.Filter(all_of=pb.FilterList(items=xs)), st.lists(inner, max_size=3)),
        st.builds(lambda xs: pb.Filter(any_of=pb.FilterList(items=xs)), st.lists(inner, max_size=3)),
        st.builds(lambda x: pb.Filter(negate=x), inner),
    ),
    max_leaves=8,
)
aggregates = st.lists(
    st.builds(
        pb.Aggregate, function=st.integers(min_value=0, max_value=5), column=names, alias=st.text(max_size=5)
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dataset=st.sampled_from(["declarations", "nope", ""]),
    group_by=st.lists(names, max_size=3),
    aggs=aggregates,
    where=st.one_of(st.none(), filters),
    epsilon=st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e9, float("nan")]),
)
def test_arbitrary_specs(release: JobRouter, dataset, group_by, aggs, where, epsilon) -> None:  # noqa: ANN001
    spec = pb.QuerySpec(dataset=dataset, group_by=group_by, aggregates=aggs)
    if where is not None:
        spec.filter.CopyFrom(where)
    spec.privacy.epsilon = epsilon
    _check(release.handle(pb.JobRequest(job_id="fuzz", query=spec)))


def test_audit_log_still_verifies(release: JobRouter) -> None:
    from nodes.audit import verify

    assert verify(Path(release.ctx.audit.path)).ok
