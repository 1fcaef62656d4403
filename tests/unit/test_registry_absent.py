"""The registry names nodes that announced a dataset but are not connected now."""

from __future__ import annotations

import time

from coordinator.registry import NodeSession, Registry
from protocols import federation_pb2 as pb


def _session(node: str, *datasets: str) -> NodeSession:
    return NodeSession(node_id=node, datasets=[pb.DatasetInfo(name=d) for d in datasets])


def test_connected_nodes_are_not_absent() -> None:
    registry = Registry(heartbeat_seconds=1)
    registry.register(_session("politie", "signals"))
    assert registry.absent("signals") == []


def test_a_node_that_left_is_absent_for_its_datasets_only() -> None:
    registry = Registry(heartbeat_seconds=1)
    gone = _session("kmar", "signals")
    registry.register(gone)
    registry.register(_session("politie", "signals", "cases"))
    registry.unregister(gone)
    absent = registry.absent("signals")
    assert [node for node, _ in absent] == ["kmar"]
    assert 0 <= absent[0][1] < 5
    assert registry.absent("cases") == []


def test_a_node_silent_past_three_heartbeats_is_absent() -> None:
    registry = Registry(heartbeat_seconds=1)
    silent = _session("douane", "signals")
    registry.register(silent)
    silent.last_seen = time.time() - 10  # the link is open but no heartbeat came for 10 s
    absent = dict(registry.absent("signals"))
    assert set(absent) == {"douane"} and absent["douane"] >= 10


def test_a_forgotten_node_is_no_longer_absent() -> None:
    registry = Registry(heartbeat_seconds=1)
    gone = _session("kmar", "signals")
    registry.register(gone)
    registry.unregister(gone)
    assert registry.forget("kmar") == "forgotten"
    assert registry.absent("signals") == []
