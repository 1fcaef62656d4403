"""Node links at scale: each link holds a coordinator server thread for its life, so the server is
sized for ``max_nodes`` links on top of its job threads, and a link past ``max_nodes`` is refused by
rule instead of waiting for a thread that jobs and analysts need.

Real gRPC on loopback against the real ``Coordinator``; the links are opened with the node link's
generated stub, as a node daemon opens them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from coordinator.config import CoordinatorConfig
from coordinator.service import Coordinator
from federation.client import Client
from federation.processes import free_port
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc

JOBS = 1  # max_concurrent_jobs: the server used to have JOBS + 16 threads for everything
LINKS = 30  # more links than JOBS + 16
WAIT = 15.0


@dataclass
class Link:
    """One node's link: sends Hello, then nothing until closed; collects what the coordinator sends."""

    node: str
    call: object = None
    outbox: queue.Queue[pb.NodeMessage | None] = field(default_factory=queue.Queue)
    received: queue.Queue[pb.CoordinatorMessage | None] = field(default_factory=queue.Queue)

    def open(self, channel: grpc.Channel) -> Link:
        self.outbox.put(pb.NodeMessage(hello=pb.Hello(node_id=self.node, version="test")))

        def outgoing() -> Iterator[pb.NodeMessage]:
            while (msg := self.outbox.get(timeout=60)) is not None:
                yield msg

        self.call = pb_grpc.NodeLinkStub(channel).Connect(outgoing())

        def read() -> None:
            try:
                for msg in self.call:  # type: ignore[attr-defined]
                    self.received.put(msg)
            except grpc.RpcError:
                pass
            self.received.put(None)

        threading.Thread(target=read, daemon=True).start()
        return self

    def first(self) -> pb.CoordinatorMessage | None:
        return self.received.get(timeout=WAIT)

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()  # type: ignore[attr-defined]


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[tuple[str, list[Link]]]:
    address = f"127.0.0.1:{free_port()}"
    config = CoordinatorConfig(
        listen=address, state_dir=tmp_path, insecure=True, max_concurrent_jobs=JOBS, max_nodes=LINKS
    )
    server = Coordinator(config)
    server.start()
    links: list[Link] = []
    channel = grpc.insecure_channel(address)
    try:
        yield address, links
    finally:
        for link in links:
            link.close()
        channel.close()
        server.stop(grace=0)


def _open(address: str, links: list[Link], node: str) -> Link:
    channel = grpc.insecure_channel(address)
    link = Link(node).open(channel)
    links.append(link)
    return link


def test_more_links_than_job_threads_all_connect_and_analysts_are_answered(
    coordinator: tuple[str, list[Link]],
) -> None:
    address, links = coordinator
    for i in range(LINKS):
        _open(address, links, f"n{i:03d}")
    for link in links:
        welcome = link.first()
        assert welcome is not None and welcome.WhichOneof("kind") == "welcome", link.node
    with Client(address, timeout=WAIT) as fed:
        nodes = fed.nodes()
    assert set(nodes[nodes["connected"]]["node"]) == {link.node for link in links}


def test_a_link_past_max_nodes_is_refused_by_rule_and_a_freed_place_is_taken(
    coordinator: tuple[str, list[Link]],
) -> None:
    address, links = coordinator
    for i in range(LINKS):
        _open(address, links, f"n{i:03d}")
    assert all((m := link.first()) is not None and m.WhichOneof("kind") == "welcome" for link in links)
    extra = _open(address, links, "late")
    refused = extra.first()
    assert refused is not None and refused.WhichOneof("kind") == "reject"
    assert refused.reject.rule == "too_many_nodes" and "max_nodes" in refused.reject.reason
    links[0].close()
    with Client(address, timeout=WAIT) as fed:  # the place is freed once the coordinator sees the close
        for _ in range(int(WAIT / 0.1)):
            if not fed.nodes().query("node == 'n000'")["connected"].any():
                break
            threading.Event().wait(0.1)
    again = _open(address, links, "late")
    welcome = again.first()
    assert welcome is not None and welcome.WhichOneof("kind") == "welcome"
