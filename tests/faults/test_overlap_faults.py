"""Overlap jobs that must fail closed, over real node processes and mutual-TLS gRPC: a set larger
than the node allows, identifier types that do not match, and a node lost in the middle of the
PSI ring (stopped, so the coordinator's per-node timeout fires, or killed, so its link drops).

Three nodes (Douane, FIOD, KMar) from CSV and Parquet; no PostgreSQL is needed. Every node
message the coordinator receives is recorded (``FEDERATION_RECORD_DIR``), so the tests can see
when a party has answered PREPARE and that the surviving parties acknowledged FINISH.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from coordinator.overlap import RECORD_ENV
from federation.processes import LocalFederation, free_port
from federation.scenario import generate, ground_truth_overlap, write_scenario
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.refusals import NOT_COMPUTED, OVERLAP_NOT_COMPUTED
from tests.integration.conftest import SEED, RunningFederation, project_entry

NODES = ["douane", "fiod", "kmar"]
# Enough rows for sets of a few thousand identifiers: the ring then runs several round trips
# long, which leaves time to take a node away while it is in the middle of it.
RING_ROWS = 20_000
NODE_TIMEOUT = 3  # the coordinator's node_timeout_seconds in this federation
RING = ["douane.declarations", "fiod.investigations", "kmar.crossings"]
DROPPED = "fiod"
CAPPED = "fiod.signals"  # overlap_max_set = 100 for this dataset only
CAPPED_MAX = 100
TEXT_TYPED = "kmar.signals"  # its company column is declared with id_type "text" here
CHECK_EPSILON = 0.2  # the default overlap_check_epsilon: a noisy set-size check under DP


def _dataset_block(text: str, dataset: str) -> tuple[int, int]:
    """Start and end of one dataset's block in a node's TOML."""
    start = text.index(f'[[datasets]]\nname = "{dataset}"')
    end = text.find("[[datasets]]\n", start + 1)
    return start, len(text) if end < 0 else end


def _dataset_policy(text: str, dataset: str, policy: str) -> str:
    start, _ = _dataset_block(text, dataset)
    source = text.index("[datasets.source]", start)
    return text[:source] + f"[datasets.policy]\n{policy}\n" + text[source:]


def _id_type(text: str, dataset: str, column: str, id_type: str) -> str:
    start, end = _dataset_block(text, dataset)
    block = text[start:end]
    at = block.index(f'name = "{column}"\n')
    old = block.index("id_type = ", at)
    line_end = block.index("\n", old)
    block = block[:old] + f'id_type = "{id_type}"' + block[line_end:]
    return text[:start] + block + text[end:]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    root = tmp_path_factory.mktemp("overlap-faults")
    address = f"127.0.0.1:{free_port()}"
    paths = write_scenario(root, seed=SEED, rows=RING_ROWS, coordinator=address)
    coordinator_toml = paths["coordinator"].read_text()
    assert "node_timeout_seconds = 10" in coordinator_toml
    paths["coordinator"].write_text(
        coordinator_toml.replace("node_timeout_seconds = 10", f"node_timeout_seconds = {NODE_TIMEOUT}")
        # Listed projects, each with its own budget and job history, apart from the catch-all's.
        + project_entry("max-set")
        + project_entry("max-set-others")
        + project_entry("id-type")
    )
    for node in NODES:
        # Exact overlaps unless the analyst asks for epsilon.
        text = paths[node].read_text()
        text = text.replace("[policy]\n", "[policy]\ndp_required = false\noverlap_dp_required = false\n", 1)
        if node == "fiod":
            text = _dataset_policy(text, "signals", f"overlap_min_set = 10\noverlap_max_set = {CAPPED_MAX}\n")
        if node == "kmar":
            text = _id_type(text, "signals", "company", "text")
        paths[node].write_text(text)
    record = root / "record"
    before = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = str(record)
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={k: paths[k] for k in NODES},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    try:
        procs.start(timeout=90)
        yield RunningFederation(procs, paths, generate(SEED, RING_ROWS), address, root)
    finally:
        procs.stop_all()
        if before is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = before


# ---------------------------------------------------------------------- the nodes' own files


def _state(fed: RunningFederation, node: str) -> Path:
    return fed.root / "state" / node


def _charges(fed: RunningFederation, node: str) -> list[tuple[str, str, str]]:
    """(job id, dataset, project) of every charge in the node's ledger."""
    path = _state(fed, node) / "ledger.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return [
            (str(j), str(d), str(p))
            for j, d, p in conn.execute("SELECT job_id, dataset, project FROM charges")
        ]


def _overlap_entries(fed: RunningFederation, node: str) -> list[dict[str, Any]]:
    """The node's audit entries about overlap jobs (received, released)."""
    path = _state(fed, node) / "audit.log"
    text = path.read_text() if path.exists() else ""
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in entries if "overlap" in e.get("payload", {})]


def _recorded(fed: RunningFederation, job_id: str) -> list[pb.JobResponse]:
    return [
        pb.JobResponse.FromString(f.read_bytes())
        for f in sorted((fed.root / "record").glob(f"{job_id}-*.bin"))
    ]


# ---------------------------------------------------------------------- refusals


def test_set_above_overlap_max_set_is_refused_and_charges_only_the_check(fed: RunningFederation) -> None:
    project = "max-set"
    node, dataset = CAPPED.split(".")
    with fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.overlap(
                on="company", datasets=["douane.declarations", CAPPED], epsilon=1.0, project=project
            )
        budget = client.budget(project)
        jobs = client.jobs(limit=5, project=project)
    error = info.value
    # A refusal decided on the data reaches the analyst as one failure naming no rule and no party.
    assert error.rule == NOT_COMPUTED, str(error)
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert OVERLAP_NOT_COMPUTED in message
    assert dataset not in message and "overlap_max_set" not in message and str(CAPPED_MAX) not in message
    # The refusing node charged its noisy size check, before deciding, and no release.
    line = budget[(budget["node"] == node) & (budget["dataset"] == dataset)].iloc[0]
    assert line["releases"] == 1 and line["spent_epsilon"] == pytest.approx(CHECK_EPSILON)
    added = [j for j, _, p in _charges(fed, node) if p == project]
    assert [j.split(":")[0] for j in added] == ["overlap-check"]
    entries = _overlap_entries(fed, node)
    released = [e for e in entries if e["kind"] == "released" and e["payload"].get("dataset") == dataset]
    assert [e["payload"].get("check") for e in released] == ["set size"]
    assert released[0]["payload"]["passed"] is False
    # Its own audit log keeps the rule for its officer.
    path = _state(fed, node) / "audit.log"
    refusals = [json.loads(x) for x in path.read_text().splitlines() if '"refused"' in x]
    assert any(e["payload"].get("rule") == "set_too_large" for e in refusals)
    # The coordinator recorded the job as failed, with no result.
    assert len(jobs) == 1
    job = jobs.iloc[0]
    assert job["status"] == "failed" and job["result_digest"] == ""
    # Nothing was blinded, and the party that had prepared was told to drop the job.
    assert "douane.declarations" in _finish_acks(fed, job["job_id"])
    assert not [
        r for r in _recorded(fed, job["job_id"]) if r.WhichOneof("outcome") == "overlap" and r.overlap.chunk
    ]


def test_set_too_large_charges_other_parties_their_check_only(fed: RunningFederation) -> None:
    project = "max-set-others"
    with fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.overlap(
                on="company", datasets=["douane.declarations", CAPPED], epsilon=1.0, project=project
            )
        budget = client.budget(project)
    assert info.value.rule == NOT_COMPUTED
    charged = budget[budget["releases"] > 0]
    assert sorted(charged["node"] + "." + charged["dataset"]) == sorted(["douane.declarations", CAPPED])
    # One charge each, the size check: the release (charged at BLIND) was never reached.
    assert (charged["releases"] == 1).all()
    assert (charged["spent_epsilon"] - CHECK_EPSILON).abs().max() < 1e-9


def test_identifier_type_mismatch_is_refused_before_any_node_works(fed: RunningFederation) -> None:
    project = "id-type"
    audit_before = {n: len(_overlap_entries(fed, n)) for n in NODES}
    charges_before = {n: len(_charges(fed, n)) for n in NODES}
    record_before = len(list((fed.root / "record").glob("*.bin")))
    with fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.overlap(
                on="company", datasets=["douane.declarations", TEXT_TYPED], epsilon=1.0, project=project
            )
        budget = client.budget(project)
    error = info.value
    assert error.rule == "id_type_mismatch", str(error)
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert "douane.declarations: kvk" in message and f"{TEXT_TYPED}: text" in message
    # Refused at the coordinator from the nodes' public metadata: no node was asked to do anything.
    assert {n: len(_overlap_entries(fed, n)) for n in NODES} == audit_before
    assert {n: len(_charges(fed, n)) for n in NODES} == charges_before
    assert len(list((fed.root / "record").glob("*.bin"))) == record_before
    assert (budget["releases"] == 0).all()


# ---------------------------------------------------------------------- a node lost mid-ring


def _wait_for_prepare(fed: RunningFederation, party: str, known: set[str], deadline: float) -> str:
    """Wait until the coordinator has received ``party``'s PREPARE answer; return the job id."""
    record = fed.root / "record"
    while time.monotonic() < deadline:
        for path in sorted(record.glob("*.bin")):
            if path.name in known:
                continue
            try:
                response = pb.JobResponse.FromString(path.read_bytes())
            except DecodeError:
                continue  # still being written
            if response.WhichOneof("outcome") != "overlap" or not response.overlap.party:
                continue
            known.add(path.name)
            if response.overlap.party == party and response.overlap.hop_key:
                return response.overlap.job_id
        time.sleep(0.002)
    raise AssertionError(f"{party} did not answer PREPARE in time")


def _finish_acks(fed: RunningFederation, job_id: str) -> set[str]:
    """Parties that answered a FINISH of ``job_id``: its answer is the only empty overlap reply
    (every other step answers a hop key, a chunk or a decryption)."""
    acks = set()
    for response in _recorded(fed, job_id):
        if response.WhichOneof("outcome") != "overlap":
            continue
        reply = response.overlap
        if not (reply.hop_key or reply.chunk or reply.chunk_count or reply.decrypted):
            acks.add(reply.party)
    return acks


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_node_lost_mid_ring_fails_closed_and_is_named(fed: RunningFederation, how: str) -> None:
    party = next(p for p in RING if p.startswith(f"{DROPPED}."))
    survivors = [p for p in RING if p != party]
    known = {p.name for p in (fed.root / "record").glob("*.bin")}
    outcome: dict[str, Any] = {}

    def ask() -> None:
        with fed.client(timeout=60) as client:
            try:
                outcome["result"] = client.overlap(on="company", datasets=RING)
            except FederationError as exc:
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

    proc = fed.procs.procs[DROPPED]
    asker = threading.Thread(target=ask, daemon=True)
    stopped = False
    try:
        asker.start()
        job_id = _wait_for_prepare(fed, party, known, time.monotonic() + 30)
        # The party has answered PREPARE: the ring cannot complete without it.
        if how == "stopped":
            os.kill(proc.pid, signal.SIGSTOP)
            stopped = True
        else:
            fed.procs.kill(DROPPED)
        dropped_at = time.monotonic()
        asker.join(timeout=4 * NODE_TIMEOUT + 20)
        assert not asker.is_alive(), "the overlap did not fail within its bound"
        assert "result" not in outcome, "the ring finished before the node was taken away"
        elapsed = outcome["at"] - dropped_at
        error = outcome["error"]
        message = str(error)
        assert "\n" not in message and "Traceback" not in message
        assert f"node {DROPPED}" in message, message
        if how == "stopped":
            # One step waits out the timeout; FINISH goes to the stopped node without a second wait.
            assert error.rule == "timeout", message
            assert f"did not answer within {NODE_TIMEOUT}s" in message
            assert NODE_TIMEOUT - 0.5 <= elapsed < 2 * NODE_TIMEOUT - 0.5, elapsed
        else:
            # The coordinator notices the closed link; it does not wait out the timeout.
            assert error.rule in ("node_disconnected", "node_unreachable"), message
            assert elapsed < NODE_TIMEOUT, elapsed
        # No partial result: the analyst got only the error, and the job is recorded as failed.
        with fed.client() as client:
            jobs = client.jobs(limit=10)
        job = jobs[jobs["job_id"] == job_id].iloc[0]
        assert job["status"] == "failed" and job["result_digest"] == "", job.to_dict()
        # The surviving parties were told to finish, and dropped the job's keys.
        assert set(survivors) <= _finish_acks(fed, job_id)
        # They are ready for the next job at once: an overlap over them alone succeeds.
        with fed.client() as client:
            after = client.overlap(on="company", datasets=survivors)
        truth = ground_truth_overlap(fed.scenario, "company", survivors)
        assert {p: int(c) for p, c in after.counts.items() if c} == truth
    finally:
        if how == "stopped":
            if stopped:
                os.kill(proc.pid, signal.SIGCONT)
        elif DROPPED not in fed.procs.procs:
            fed.procs.start_node(DROPPED)
        asker.join(timeout=4 * NODE_TIMEOUT + 20)
        fed.procs.wait_for_nodes(set(NODES), timeout=60)
