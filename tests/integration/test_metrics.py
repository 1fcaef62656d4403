"""Prometheus metrics and readiness of real node and coordinator processes, scraped over HTTP."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from federation.processes import free_port
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
PROJECT = "metrics-watch"
SQL = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"


@pytest.fixture(scope="module")
def watched(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, dict[str, str]]]:
    """DP nodes and a coordinator, each serving metrics on a free loopback port."""
    ports = {name: f"127.0.0.1:{free_port()}" for name in ["coordinator", *NODES]}

    def edit(paths: dict[str, Path]) -> None:
        for name, listen in ports.items():
            table = "[coordinator]\n" if name == "coordinator" else "[node]\n"
            text = paths[name].read_text()
            assert table in text
            paths[name].write_text(text.replace(table, f'{table}metrics_listen = "{listen}"\n', 1))

    running, schema = start_federation(
        tmp_path_factory.mktemp("metrics"),
        postgres_dsn,
        nodes=NODES,
        dp_required=True,
        projects=(PROJECT,),
        edit=edit,
    )
    try:
        yield running, ports
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def scrape(listen: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Samples by metric family name: (sample name, labels, value)."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def value(samples: dict[str, list[tuple[str, dict[str, str], float]]], name: str, **labels: str) -> float:
    """The summed value of sample ``name`` over the samples whose labels include ``labels``."""
    family = name.removesuffix("_total").removesuffix("_count")
    return sum(
        v
        for n, lab, v in samples.get(family, [])
        if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def test_metrics_count_jobs_epsilon_audit_and_readiness(
    watched: tuple[RunningFederation, dict[str, str]],
) -> None:
    running, ports = watched
    with running.client() as fed:
        fed.query(SQL, epsilon=1.0, project=PROJECT)
        with pytest.raises(FederationError) as refused:
            # Above the dataset's per-query cap (5): the node refuses and charges nothing.
            fed.query(SQL, epsilon=6.0, project=PROJECT)
    rule = refused.value.rule

    node = scrape(ports["douane"])
    assert value(node, "federation_node_jobs_total", kind="query", outcome="answered", rule="") == 1
    assert value(node, "federation_node_jobs_total", kind="query", outcome="refused", rule=rule) == 1
    assert value(node, "federation_node_job_seconds_count", kind="query") == 2
    assert value(
        node, "federation_node_epsilon_spent", dataset="declarations", project=PROJECT
    ) == pytest.approx(1.0)
    assert value(node, "federation_node_audit_entries_total") > 0
    assert value(node, "federation_node_ready") == 1
    with urllib.request.urlopen(f"http://{ports['douane']}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read().strip() == b"ready"

    coordinator = scrape(ports["coordinator"])
    assert value(coordinator, "federation_coordinator_connected_nodes") == len(NODES)
    assert (
        value(coordinator, "federation_coordinator_jobs_total", kind="query", outcome="complete", rule="")
        == 1
    )
    assert value(coordinator, "federation_coordinator_jobs_total", kind="query", rule=rule) == 1
    assert value(coordinator, "federation_coordinator_job_seconds_count", kind="query") == 2

    # Labels are public names only (docs/security.md): no requester, SQL text or local name.
    allowed = {"kind", "outcome", "rule", "dataset", "project", "check", "le"}
    for samples in (node, coordinator):
        names = {key for family in samples.values() for _, labels, _ in family for key in labels}
        assert names <= allowed, names - allowed
        values = {v for family in samples.values() for _, labels, _ in family for v in labels.values()}
        assert not any("analyst" in v or "SELECT" in v or "port" in v for v in values), values

    kit = running.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    with grpc.secure_channel(running.address, creds) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_node_readiness_drops_when_the_link_is_gone(
    watched: tuple[RunningFederation, dict[str, str]],
) -> None:
    """Readiness is real: with the coordinator stopped, the node reports its link check failed."""
    running, ports = watched
    running.procs.stop("coordinator")
    failed = b""
    for _ in range(100):  # bounded: the link drops within a heartbeat or two
        try:
            urllib.request.urlopen(f"http://{ports['kmar']}/healthz", timeout=10).close()
        except urllib.error.HTTPError as exc:
            failed = exc.read()
            break
        time.sleep(0.2)
    assert failed.strip() == b"not ready: link"
    assert value(scrape(ports["kmar"]), "federation_node_ready_check", check="link") == 0
    assert value(scrape(ports["kmar"]), "federation_node_ready_check", check="sources") == 1
