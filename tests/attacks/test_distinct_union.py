"""Attack tests: what an honest-but-curious coordinator sees of a union COUNT(DISTINCT) across nodes.

Every node message the coordinator receives is recorded (``FEDERATION_RECORD_DIR``). The union of
docs/distinct.md must leave it blinded tokens, sealed labels and counts only: no identifier, no
hash of one, no group label in the clear, and no list that is both readable and tied to one
party, so no per-node count per group. Refusals: a policy refusal at any party costs no party any
budget. The coordinator's message limit is small, so every list travels in chunks.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.overlap import RECORD_ENV
from federation import scenario as vocabulary
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.identifiers import normalise
from protocols.psi import hash_to_group
from protocols.psi_union import WRAPPED_BYTES, group_item, group_label
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar", "belastingdienst"]
SQL = "SELECT region, COUNT(DISTINCT company) AS companies FROM signals GROUP BY region"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    root = tmp_path_factory.mktemp("distinct-attack")
    record = root / "record"

    def small_messages(paths: dict[str, Path]) -> None:
        text = paths["coordinator"].read_text()
        assert "max_message_bytes = 4194304" in text
        paths["coordinator"].write_text(
            text.replace("max_message_bytes = 4194304", "max_message_bytes = 98304")
        )

    before = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = str(record)
    try:
        running, schema = start_federation(root, postgres_dsn, nodes=NODES, edit=small_messages)
    finally:
        if before is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = before
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _messages(record: Path) -> list[pb.JobResponse]:
    out = []
    for path in sorted(record.glob("*.bin")):
        message = pb.JobResponse()
        message.ParseFromString(path.read_bytes())
        out.append(message)
    return out


def test_the_coordinator_sees_tokens_sealed_labels_and_counts_only(recorded: RunningFederation) -> None:
    record = recorded.root / "record"
    with recorded.client() as fed:
        df = fed.query(SQL)
    assert df.attrs["distinct"] == "union"
    messages = [m for m in _messages(record) if m.WhichOneof("outcome") == "overlap"]
    assert messages, "the union ran as recorded overlap steps"
    replies = [m.overlap for m in messages]
    blob = b"".join(m.SerializeToString() for m in messages)

    frames = {node: recorded.scenario.frames[f"{node}.signals"] for node in NODES}
    pairs = set()
    for frame in frames.values():
        for region, company in frame[["region", "company"]].dropna().itertuples(index=False):
            pairs.add((region, normalise("kvk", company)))
    # No readable identifier, no group label in the clear.
    for _, company in list(pairs)[:500]:
        assert company.encode() not in blob
    for region in vocabulary.REGIONS:
        assert region.encode() not in blob, f"group label {region} readable at the coordinator"
    # No unblinded group element of any (group, unit) item: what a dictionary attack would need.
    elements = set(hash_to_group([group_item(group_label((r,)), c) for r, c in list(pairs)[:2000]]))
    readable = [r.chunk for r in replies if r.chunk and not r.sealed]
    for chunk in readable:
        assert not any(chunk[i : i + 32] in elements for i in range(0, len(chunk) - 31, 16))

    # Per-party figures: one total set size each, never a count per group.
    prepared = [r for r in replies if r.hop_key]
    assert len(prepared) == len(NODES)
    assert all(not r.categories for r in prepared)
    sizes = sum(int(r.set_size) for r in prepared)
    # The only readable list is the mixing party's merged one: every party's items, no owner.
    merged = b"".join(readable)
    assert len(merged) == sizes * WRAPPED_BYTES
    assert len(readable) > 1, "large lists travel in chunks"
    assert sum(1 for r in replies if r.chunk and r.chunk_index == 0 and not r.sealed) == 1


def _charges(fed: RunningFederation, node: str) -> float:
    """Everything the node's ledger has charged to its signals dataset so far."""
    with sqlite3.connect(fed.root / "state" / node / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT cost_epsilon FROM charges WHERE dataset = 'signals'").fetchall()
    return float(sum(r[0] for r in rows))


def test_a_policy_refusal_names_rule_and_node_and_costs_no_party_anything(
    recorded: RunningFederation,
) -> None:
    """Above the per-query epsilon cap: every node refuses at PREPARE, before any charge."""
    before = {node: _charges(recorded, node) for node in NODES}
    with recorded.client() as fed:
        with pytest.raises(FederationError) as info:
            fed.query(SQL, epsilon=50.0, project="union-refused")
    assert info.value.rule == "epsilon_cap"
    assert "refused" in info.value.message and "company" not in info.value.message
    for node in NODES:
        assert _charges(recorded, node) == before[node]
