"""Histogram and date-part group keys attacked over a real federation (coordinator and nodes as
OS processes): too many bins, keys crafted past the SDK, a date part without a declared range and
derived keys on the secure path are refused naming the rule and the node; no refusal carries a
count, a value or a local name."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tomli_w

from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "politie", "kmar"]
LOCAL_NAMES = ("aangegeven_waarde", "pleegdatum", "datum", "kvk")


def _no_range_at_politie(paths: dict[str, Path]) -> None:
    """Politie declares no date range for its incidents: their years have no public domain."""
    config = tomllib.loads(paths["politie"].read_text())
    dropped = 0
    for dataset in config["datasets"]:
        for column in dataset.get("columns", []):
            dropped += column.pop("range", None) is not None
    assert dropped, "the politie config declares no date range to drop"
    paths["politie"].write_text(tomli_w.dumps(config))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("group-keys"), postgres_dsn, nodes=NODES, edit=_no_range_at_politie
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


@pytest.fixture(scope="module")
def stub(fed: RunningFederation) -> Iterator[pb_grpc.AnalystStub]:
    kit = fed.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    with grpc.secure_channel(fed.address, creds) as channel:
        yield pb_grpc.AnalystStub(channel)


def _clean(message: str) -> None:
    for name in LOCAL_NAMES:
        assert name not in message


def test_too_many_bins_are_refused_naming_the_rule_and_node(fed: RunningFederation) -> None:
    with fed.client() as client:
        with pytest.raises(FederationError) as caught:
            client.query("SELECT FLOOR(value / 1) * 1 AS b, COUNT(*) AS n FROM declarations GROUP BY b")
    assert caught.value.rule == "too_many_groups"
    assert "douane" in str(caught.value) and "FLOOR(value / 1)" in str(caught.value)
    _clean(str(caught.value))


def test_a_crafted_key_far_outside_any_domain_is_refused_before_any_is_listed(
    stub: pb_grpc.AnalystStub,
) -> None:
    sql = "SELECT WIDTH_BUCKET(value, 0, 1, 2) AS b, COUNT(*) AS n FROM declarations GROUP BY b"
    spec = parse_query(sql)
    spec.derived[0].buckets = 4_000_000_000  # past the SDK: four billion keys
    started = time.monotonic()
    response = stub.Query(pb.QueryRequest(spec=spec, sql=sql, timeout_seconds=10), timeout=60)
    assert time.monotonic() - started < 20  # counted, not listed
    assert not response.ok and response.error_rule == "too_many_groups" and "douane" in response.error
    assert not response.rows


@pytest.mark.parametrize(
    ("edit", "rule"),
    [
        (lambda s: setattr(s.derived[0], "alias", "elsewhere"), "malformed_request"),
        (lambda s: setattr(s.derived[0], "width", float("nan")), "malformed_request"),
        (lambda s: setattr(s.derived[0], "transform", "date_trunc"), "not_groupable"),
        (lambda s: setattr(s.derived[0], "column", "company"), "identifier_column"),
    ],
    ids=["alias-not-grouped", "nan-width", "date-part-of-a-number", "identifier"],
)
def test_crafted_keys_are_refused_by_the_node(stub: pb_grpc.AnalystStub, edit: object, rule: str) -> None:
    sql = "SELECT FLOOR(value / 1000) * 1000 AS b, COUNT(*) AS n FROM declarations GROUP BY b"
    spec = parse_query(sql)
    assert callable(edit)
    edit(spec)
    response = stub.Query(pb.QueryRequest(spec=spec, sql=sql, timeout_seconds=10), timeout=60)
    assert not response.ok and response.error_rule == rule, response.error
    assert "douane" in response.error and not response.rows
    _clean(response.error)


def test_a_date_part_without_a_declared_range_is_refused(fed: RunningFederation) -> None:
    with fed.client() as client:
        with pytest.raises(FederationError) as caught:
            client.query("SELECT EXTRACT(YEAR FROM date) AS y, COUNT(*) AS n FROM incidents GROUP BY y")
        assert caught.value.rule == "not_groupable" and "politie" in str(caught.value)
        assert "range" in str(caught.value)
        _clean(str(caught.value))
        # Months have a fixed public domain and need no range.
        months = client.query("SELECT MONTH(date) AS m, COUNT(*) AS n FROM incidents GROUP BY m")
    assert list(months["m"]) == list(range(1, 13))


def test_derived_keys_are_refused_on_the_secure_path(fed: RunningFederation) -> None:
    with fed.client() as client:
        with pytest.raises(FederationError) as caught:
            client.query(
                "SELECT FLOOR(year / 2) AS b, COUNT(*) AS n FROM signals GROUP BY b", epsilon=1.0, secure=True
            )
    assert caught.value.rule == "derived_key_unsupported"
    with fed.client() as client:
        with pytest.raises(FederationError) as caught:
            client.query("SELECT STDDEV(year) AS sd FROM signals", epsilon=1.0, secure=True)
    assert caught.value.rule == "unsupported_under_secure"
