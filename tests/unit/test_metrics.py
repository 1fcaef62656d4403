"""Metrics registries are per process object, coordinator rule labels stay within the registry, and
the coordinator's health follows its job store."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from coordinator.config import load_coordinator_config
from coordinator.metrics import CoordinatorMetrics, rule_of
from coordinator.registry import Registry
from coordinator.service import Coordinator
from federation.processes import free_port


def test_rule_label_is_a_registered_rule_or_other() -> None:
    assert rule_of("") == ""
    assert rule_of("the project's budget is spent [rule: budget]") == "budget"
    # An unregistered or analyst-shaped text never becomes a label value.
    assert rule_of("node x: failed [rule: made_up_by_someone]") == "other"
    assert rule_of("SELECT secret FROM t [rule: budget] and more") == "other"
    assert rule_of("no rule at all") == "other"


def test_two_instances_count_apart_and_leave_the_global_registry_alone() -> None:
    first, second = CoordinatorMetrics(Registry(1.0)), CoordinatorMetrics(Registry(1.0))
    first.finished("query", "complete", "", 0.2)
    first.finished("query", "refused", "too costly [rule: epsilon_cap]", 0.01)
    labels = {"kind": "query", "outcome": "refused", "rule": "epsilon_cap"}
    assert first.registry.get_sample_value("federation_coordinator_jobs_total", labels) == 1
    assert second.registry.get_sample_value("federation_coordinator_jobs_total", labels) is None
    assert first.registry.get_sample_value("federation_coordinator_job_seconds_count", {"kind": "query"}) == 2
    assert first.registry.get_sample_value("federation_coordinator_connected_nodes") == 0
    assert REGISTRY.get_sample_value("federation_coordinator_jobs_total", labels) is None


def test_health_and_healthz_follow_the_job_store(tmp_path: Path) -> None:
    """A coordinator whose job store fails turns NOT_SERVING on gRPC health and 503 on /healthz."""
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    (tmp_path / "c.toml").write_text(
        f'[coordinator]\ninsecure = true\nlisten = "{listen}"\nmetrics_listen = "{metrics}"\n'
        'heartbeat_seconds = 0.1\nstate_dir = "state"\n'
    )
    coordinator = Coordinator(load_coordinator_config(tmp_path / "c.toml"))
    coordinator.start()
    try:
        with grpc.insecure_channel(listen) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="federation.v1.Analyst")
            assert stub.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            with urllib.request.urlopen(f"http://{metrics}/healthz", timeout=5) as response:
                assert response.status == 200
            coordinator.jobs.close()  # the store's connection is gone: every read fails
            status = health_pb2.HealthCheckResponse.SERVING
            for _ in range(100):  # bounded: re-checked every heartbeat (0.1 s)
                status = stub.Check(request, timeout=5).status
                if status != health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://{metrics}/healthz", timeout=5)
        assert failed.value.code == 503 and failed.value.read().strip() == b"not ready: jobs"
    finally:
        coordinator.stop(grace=0.1)
