"""The overlap refusal as an oracle, attacked over a real DP federation (coordinator and two nodes
as OS processes, mutual TLS).

The attack: one partner is given a filter so narrow that its set is always below
``overlap_min_set``, so the job always fails; the analyst then reads another partner's outcome
to learn whether *its* filter matches at least ``overlap_min_set`` companies, and binary-searches
a numeric bound until the exact boundary is found, at no cost. The defence: a set-size check is
decided on a noisy size charged to the ledger first, and a job refused on the data comes back as
one undifferentiated failure (``not_computed``), without any party's rule.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from federation.overlap import build_request
from federation.processes import LocalFederation, free_port
from federation.scenario import Scenario, generate, write_scenario
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.channels import channel_options
from protocols.identifiers import normalise_many
from protocols.identity import grpc_channel_credentials
from protocols.refusals import NOT_COMPUTED, OVERLAP_NOT_COMPUTED
from tests.integration.conftest import SEED, RunningFederation, project_entry

ROWS = 4000
NODES = ["douane", "fiod"]
PROBED = "douane.declarations"  # the partner whose set size the attacker wants to learn
ALWAYS_SMALL = "fiod.investigations"  # given a filter matching a company or two
TINY = "damage >= 9000000"
MIN_SET = 100  # the demo's overlap_min_set
CHECK_EPSILON = 0.2  # the default overlap_check_epsilon
SEARCH_STEPS = 21  # value bounds are [0, 2,000,000]: 21 halvings find the boundary to one euro


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    """DP everywhere (the demo's defaults): overlaps spend epsilon and check sizes under noise."""
    root = tmp_path_factory.mktemp("overlap-oracle")
    address = f"127.0.0.1:{free_port()}"
    paths = write_scenario(root, seed=SEED, rows=ROWS, coordinator=address)
    # Listed projects, each with its own budget and job history, apart from the catch-all's.
    coordinator = paths["coordinator"].read_text()
    paths["coordinator"].write_text(coordinator + project_entry("oracle") + project_entry("oracle-jobs"))
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={k: paths[k] for k in NODES},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    try:
        procs.start(timeout=90)
        yield RunningFederation(procs, paths, generate(SEED, ROWS), address, root)
    finally:
        procs.stop_all()


def _stub(fed: RunningFederation) -> tuple[grpc.Channel, pb_grpc.AnalystStub]:
    """The analyst's raw view: every field the coordinator answers, not only what the SDK shows."""
    kit = fed.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    channel = grpc.secure_channel(fed.address, creds, options=channel_options())
    return channel, pb_grpc.AnalystStub(channel)


def _set_size(s: Scenario, bound: int) -> int:
    """Distinct normalised companies of the probed dataset with ``value >= bound`` (ground truth)."""
    frame = s.frames[PROBED]
    ids, _ = normalise_many("kvk", frame[frame["value"] >= bound]["company"].dropna().tolist())
    return len(set(ids))


def _probe(stub: pb_grpc.AnalystStub, bound: int, project: str) -> pb.OverlapResponse:
    where = {ALWAYS_SMALL: TINY, PROBED: f"value >= {bound}"}
    request = build_request("company", [ALWAYS_SMALL, PROBED], where, epsilon=1.0, project=project)
    return stub.Overlap(request, timeout=120)


def _analyst_view(response: pb.OverlapResponse) -> bytes:
    """Everything the analyst receives except the job id, which is fresh for every job."""
    view = pb.OverlapResponse()
    view.CopyFrom(response)
    view.job_id = ""
    return view.SerializeToString(deterministic=True)


def _old_oracle(response: pb.OverlapResponse) -> bool | None:
    """What the attack read: did the probed partner accept its set (>= overlap_min_set)?"""
    for outcome in response.nodes:
        if outcome.node == PROBED:
            if outcome.status == "answered":
                return True
            if outcome.rule == "set_too_small":
                return False
    return None


def _entries_for(heads: pb.AuditHeadsResponse, job_id: str) -> int:
    """Audit entries the node wrote while answering ``job_id``, read off the heads it published."""
    seqs = sorted(h.seq for h in heads.heads)
    mine = [h.seq for h in heads.heads if h.job_id.startswith(f"{job_id}:")]
    assert mine, "the node published a head with every answer"
    before = max(q for q in seqs if q < min(mine))
    return max(mine) - before


def _charges(fed: RunningFederation, node: str, project: str) -> list[tuple[str, float]]:
    with sqlite3.connect(fed.root / "state" / node / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT job_id, cost_epsilon FROM charges WHERE project = ?", (project,))
        return [(str(j), float(e)) for j, e in rows]


def _audit(fed: RunningFederation, node: str) -> list[dict[str, Any]]:
    text = (fed.root / "state" / node / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_binary_search_on_the_refusal_learns_nothing_for_free(fed: RunningFederation) -> None:
    s = fed.scenario
    below, above = 1_500_000, 10_000  # the probed set: far below and far above the minimum
    assert _set_size(s, below) < MIN_SET // 4 and _set_size(s, above) > 4 * MIN_SET
    tiny = s.frames[ALWAYS_SMALL]
    assert tiny[tiny["damage"] >= 9_000_000]["company"].nunique() <= 2
    project = "oracle"
    channel, stub = _stub(fed)
    try:
        # The attacker's binary search for the largest bound that still leaves >= MIN_SET companies.
        lo, hi = 0, 2_000_000
        transcript = []
        for _ in range(SEARCH_STEPS):
            mid = (lo + hi) // 2
            response = _probe(stub, mid, project)
            transcript.append((mid, response))
            if _old_oracle(response):
                lo = mid
            else:
                hi = mid
        far = {bound: _probe(stub, bound, project) for bound in (below, above)}
        heads = stub.AuditHeads(pb.AuditHeadsRequest(node=PROBED.split(".")[0], all=True), timeout=30)
    finally:
        channel.close()
    responses = [r for _, r in transcript] + list(far.values())

    # 1. Every answer is the one undifferentiated failure: no rule, no party singled out.
    for response in responses:
        assert not response.ok
        assert (response.error_rule, response.error) == (NOT_COMPUTED, OVERLAP_NOT_COMPUTED)
        assert {(o.status, o.rule, o.reason) for o in response.nodes} == {
            (NOT_COMPUTED, NOT_COMPUTED, OVERLAP_NOT_COMPUTED)
        }
        assert "set_too" not in response.SerializeToString().decode("latin-1")
    # 2. The answers do not depend on whether the probed set is above the minimum.
    assert _analyst_view(far[below]) == _analyst_view(far[above])
    assert len({_analyst_view(r) for r in responses}) == 1
    assert {_old_oracle(r) for r in responses} == {None}
    assert lo == 0, "the search moved: the refusal still told the attacker something"

    #    Nor do the audit chain heads the probed node published: it wrote as many entries for
    #    the set above the minimum as for the one below.
    assert _entries_for(heads, far[below].job_id) == _entries_for(heads, far[above].job_id)

    # 3. Nothing was free: each party charged its noisy size check for every attempt, before it
    #    decided, and nothing else (no release was reached). The analyst is told what it cost.
    attempts = len(responses)
    for response in responses:
        assert all(o.cost.epsilon == pytest.approx(CHECK_EPSILON, rel=1e-6) for o in response.nodes)
    for key in (ALWAYS_SMALL, PROBED):
        node, dataset = key.split(".")
        charges = _charges(fed, node, project)
        assert len(charges) == attempts, (key, charges)
        assert all(j.startswith("overlap-check:") and j.endswith(f":{dataset}") for j, _ in charges)
        assert sum(e for _, e in charges) == pytest.approx(attempts * CHECK_EPSILON, rel=1e-6)
    with fed.client() as client:
        budget = client.budget(project)
    for key in (ALWAYS_SMALL, PROBED):
        node, dataset = key.split(".")
        line = budget[(budget["node"] == node) & (budget["dataset"] == dataset)].iloc[0]
        assert line["releases"] == attempts
        assert line["spent_epsilon"] == pytest.approx(attempts * CHECK_EPSILON, rel=1e-6)

    # 4. The node's own audit log keeps the outcome for its officer: the check as a release with
    #    its cost and result, and the refusal with its rule.
    node, dataset = PROBED.split(".")
    entries = _audit(fed, node)
    checks = {
        e["job_id"]: e["payload"]
        for e in entries
        if e["kind"] == "released"
        and e["payload"].get("check") == "set size"
        and e["payload"].get("project") == project
    }
    assert set(checks) == {j for j, _ in _charges(fed, node, project)}
    assert all(p["epsilon"] == pytest.approx(CHECK_EPSILON, rel=1e-6) for p in checks.values())
    by_job = {p["overlap"]: p["passed"] for p in checks.values()}
    assert by_job[far[above].job_id] is True and by_job[far[below].job_id] is False
    refused = [e for e in entries if e["kind"] == "refused" and e["payload"].get("rule") == "set_too_small"]
    assert refused, "the node's audit log names the rule that fired"


def test_the_coordinators_job_record_keeps_no_party_rule(fed: RunningFederation) -> None:
    project = "oracle-jobs"
    channel, stub = _stub(fed)
    try:
        response = _probe(stub, 1_500_000, project)
    finally:
        channel.close()
    assert response.error_rule == NOT_COMPUTED
    with fed.client() as client:
        jobs = client.jobs(limit=5, project=project)
    record = jobs[jobs["job_id"] == response.job_id].iloc[0]
    assert record["status"] == "failed"
    assert "set_too" not in record.to_json() and "refused" not in record["nodes"]
    assert record["nodes"].count(NOT_COMPUTED) == 2
