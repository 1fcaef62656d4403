"""Protocol-level attacks on secure aggregation, with the real coordinator in this process (so a
test can act between rounds) and the nodes as OS processes over mutual TLS.

SecAgg (Bonawitz et al., CCS 2017): a step out of order is refused and ends the node's part; the
coordinator only ever holds masked vectors; a node lost after advertising its keys drops out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator import secure_query
from coordinator.config import load_coordinator_config
from coordinator.service import Coordinator
from federation.processes import LocalFederation, free_port
from federation.scenario import generate, write_scenario
from protocols import federation_pb2 as pb
from protocols import secagg_messages as m
from tests.integration.conftest import SEED, RunningFederation

ROWS = 4000
NODES = ["douane", "kmar", "politie"]
SQL = "SELECT COUNT(*) AS n FROM signals"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    root = tmp_path_factory.mktemp("protocol")
    address = f"127.0.0.1:{free_port()}"
    paths = write_scenario(root, seed=SEED, rows=ROWS, coordinator=address, formats={"douane": "csv"})
    text = paths["coordinator"].read_text().replace("heartbeat_seconds = 5", "heartbeat_seconds = 1")
    paths["coordinator"].write_text(text)
    for node in NODES:
        text = paths[node].read_text()
        paths[node].write_text(text.replace("[policy]\n", "[policy]\ndp_required = false\n", 1))
    coordinator = Coordinator(load_coordinator_config(paths["coordinator"]))
    coordinator.start()
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={n: paths[n] for n in NODES},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    running = RunningFederation(procs, paths, generate(SEED, ROWS), address, root)
    running.coordinator = coordinator  # type: ignore[attr-defined]
    try:
        for node in NODES:
            procs.start_node(node)
        procs.wait_for_nodes(set(NODES), timeout=90)
        yield running
    finally:
        procs.stop_all()
        coordinator.stop()


def _count(fed: RunningFederation, nodes: list[str]) -> int:
    return sum(int(fed.scenario.frames[f"{n}.signals"]["company"].notna().sum()) for n in nodes)


def _outcomes(df: Any) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in df.attrs["nodes"]}


@contextmanager
def _observe(observer: secure_query.Observer) -> Iterator[None]:
    secure_query.observers.append(observer)
    try:
        yield
    finally:
        secure_query.observers.remove(observer)


def test_secagg_step_out_of_order_is_refused(fed: RunningFederation) -> None:
    registry = fed.coordinator.registry  # type: ignore[attr-defined]
    seen: dict[str, pb.JobResponse] = {}

    def skip_to_masked_input(job_id: str, rnd: int, replies: Mapping[str, pb.SecureReply]) -> None:
        if rnd != 0 or seen:
            return
        # Round 3 (masked input) sent to kmar before round 2 (share keys): a reordered message.
        delivery = m.ShareDelivery(job_id, "kmar", ()).to_bytes()
        step = pb.SecureStep(job_id=job_id, round=m.ROUND_MASKED_INPUT, payload=delivery)
        session = registry.get("kmar")
        future = session.send_job(pb.JobRequest(job_id=f"{job_id}:reordered", secure=step))
        seen["kmar"] = future.result(timeout=20)

    with _observe(skip_to_masked_input), fed.client() as client:
        df = client.query(SQL, secure=True, timeout=5)
    refusal = seen["kmar"].refusal
    assert refusal.rule == "secagg_wrong_round", refusal
    assert "node is at round" in refusal.reason
    # The node failed closed: it took no further part, and the sum is the other two nodes'.
    assert _outcomes(df)["kmar"]["status"] != "answered"
    assert int(df["n"].iloc[0]) == _count(fed, ["douane", "politie"])


def test_coordinator_holds_only_masked_vectors(
    fed: RunningFederation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secure_query.RECORD_ENV, str(tmp_path))
    with fed.client() as client:
        df = client.query(SQL, secure=True)
    assert int(df["n"].iloc[0]) == _count(fed, NODES)  # the sum is right, so the vectors are real
    folder = tmp_path / df.attrs["job_id"]
    for node in NODES:
        frame = fed.scenario.frames[f"{node}.signals"]
        frame = frame[frame["company"].notna()]
        plain = {len(frame), frame["company"].nunique()}  # COUNT(*) and the unit count it is checked on
        reply = pb.SecureReply.FromString((folder / f"round3-{node}.pb").read_bytes())
        masked = m.MaskedInput.from_bytes(reply.payload).vector
        assert masked.size == 2 and not set(int(v) for v in masked) & plain
        for rnd in (0, 2, 4):
            raw = (folder / f"round{rnd}-{node}.pb").read_bytes()
            for value in plain:
                assert np.uint64(value).tobytes() not in raw, (node, rnd)


def test_node_killed_after_advertising_keys_drops_out(fed: RunningFederation) -> None:
    victim = fed.procs.procs["kmar"]

    def kill_after_keys(job_id: str, rnd: int, replies: Mapping[str, pb.SecureReply]) -> None:
        if rnd == 0 and "kmar" in replies and victim.poll() is None:
            victim.kill()
            victim.wait(timeout=10)

    try:
        with _observe(kill_after_keys), fed.client() as client:
            df = client.query(SQL, secure=True, timeout=5)
    finally:
        fed.procs.procs.pop("kmar", None)
    assert victim.poll() is not None
    outcome = _outcomes(df)["kmar"]
    assert outcome["status"] in ("disconnected", "timeout"), outcome
    assert int(df["n"].iloc[0]) == _count(fed, ["douane", "politie"])
    fed.procs.start_node("kmar")
    fed.procs.wait_for_nodes(set(NODES), timeout=60)
    with fed.client() as client:
        again = client.query(SQL, secure=True, timeout=10)
    assert int(again["n"].iloc[0]) == _count(fed, NODES)


def test_unknown_secure_job_is_refused(fed: RunningFederation) -> None:
    # A round-4 unmask request for a job the node never started (a replay into a new job id).
    registry = fed.coordinator.registry  # type: ignore[attr-defined]
    job_id = uuid.uuid4().hex
    step = pb.SecureStep(job_id=job_id, round=m.ROUND_UNMASK, payload=b"")
    response = registry.get("douane").send_job(pb.JobRequest(job_id=f"{job_id}:4", secure=step))
    refusal = response.result(timeout=20).refusal
    assert refusal.rule == "secure_unknown_job" and job_id in refusal.reason
