"""Entity overlap end to end: multi-party PSI and intersection-sum over real processes and gRPC."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from coordinator.overlap import RECORD_ENV
from federation.overlap import JobProgress, build_request
from federation.processes import LocalFederation, free_port
from federation.scenario import GOODS, Scenario, generate, ground_truth_overlap, write_scenario
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.psi import DOMAIN, TOKEN_BYTES, hash_to_group, unpack_tokens
from protocols.refusals import NOT_COMPUTED, OVERLAP_NOT_COMPUTED
from tests.integration.conftest import ROWS, SEED, RunningFederation, _drop_schema, project_entry

NODES = ["douane", "belastingdienst", "politie", "fiod", "om", "kmar"]
FOUR = ["douane.declarations", "belastingdienst.vat_returns", "politie.incidents", "fiod.investigations"]
# Ten parties on six nodes: an overlap party is a dataset ("node.dataset"), several per node.
TEN = [
    *FOUR,
    "om.cases",
    "kmar.crossings",
    "douane.signals",
    "belastingdienst.signals",
    "fiod.signals",
    "om.signals",
]
# Small sets keep the ring (10 x 10 blindings per identifier) to seconds; each stays above its minimum.
TEN_WHERE = {
    "belastingdienst.vat_returns": "year = 2023",
    **{name: "year = 2023" for name in TEN if name.endswith(".signals")},
}
ROTTERDAM_2023 = "port = 'Rotterdam' AND year = 2023"
# Under DP every party checks its set size on a noisy size charged at this epsilon first; at 0.5
# the sets used here are far enough from their bounds that a check never fails by chance.
CHECK = 0.5


def _policy(text: str, extra: str) -> str:
    return text.replace("[policy]\n", f"[policy]\n{extra}", 1)


def _no_overlap_on_signals(text: str) -> str:
    """Politie's officer keeps its signals dataset out of overlaps (a per-dataset override)."""
    start = text.index('[[datasets]]\nname = "signals"')
    source = text.index("[datasets.source]", start)
    return text[:source] + "[datasets.policy]\noverlap_columns = []\n\n" + text[source:]


@pytest.fixture(scope="module")
def fed_overlap(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    root = tmp_path_factory.mktemp("overlap")
    address = f"127.0.0.1:{free_port()}"
    schema = f"it_{uuid.uuid4().hex[:10]}"
    paths = write_scenario(
        root,
        seed=SEED,
        rows=ROWS,
        coordinator=address,
        postgres_dsn=postgres_dsn,
        pg_schema=schema,
        formats={"belastingdienst": "postgres", "douane": "csv"},
    )
    for node in NODES:
        # Exact overlaps unless the analyst asks for epsilon; small keys keep Paillier fast here.
        extra = f"dp_required = false\noverlap_dp_required = false\noverlap_check_epsilon = {CHECK}\n"
        if node == "douane":
            extra += "overlap_min_set = 20\noverlap_key_bits = 1024\n"
        text = _policy(paths[node].read_text(), extra)
        if node == "politie":
            text = _no_overlap_on_signals(text)
        paths[node].write_text(text)
    # A small message limit makes every hop of more than a few thousand tokens travel in chunks.
    coordinator_toml = paths["coordinator"].read_text()
    assert "max_message_bytes = 4194304" in coordinator_toml
    paths["coordinator"].write_text(
        coordinator_toml.replace("max_message_bytes = 4194304", "max_message_bytes = 98304")
        # Listed projects, each with its own budget (other names share the catch-all's).
        + project_entry("overlap-dp")
        + project_entry("overlap-sum")
    )
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
        yield RunningFederation(procs, paths, generate(SEED, ROWS), address, root)
    finally:
        procs.stop_all()
        if before is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = before
        _drop_schema(postgres_dsn, schema)


def _filtered(s: Scenario, key: str, query: str) -> Scenario:
    frames = dict(s.frames)
    frames[key] = frames[key].query(query)
    return dataclasses.replace(s, frames=frames)


def test_exact_overlap_equals_pooled_ground_truth(fed_overlap: RunningFederation) -> None:
    s = fed_overlap.scenario
    with fed_overlap.client() as fed:
        o = fed.overlap(on="company", datasets=FOUR, where={"douane.declarations": ROTTERDAM_2023})
    truth = ground_truth_overlap(
        _filtered(s, "douane.declarations", "port == 'Rotterdam' and year == 2023"), "company", FOUR
    )
    assert o.exact and o.noise_sd == 0
    assert {p: int(c) for p, c in o.counts.items() if c} == truth
    assert len(o.patterns) == 2 ** len(FOUR) - 1
    for a in FOUR:
        for b in FOUR:
            expected = sum(c for p, c in truth.items() if a in p and b in p)
            assert o.pairwise.loc[a, b] == expected, (a, b)
    assert o.at_least(3) == sum(c for p, c in truth.items() if len(p) >= 3)
    assert o.malformed == dict.fromkeys(FOUR, 0)
    # The planted network shows up at three or more partners, and the overlap counts it.
    network = set(s.network_companies)
    rotterdam = s.frames["douane.declarations"].query("port == 'Rotterdam' and year == 2023")
    sets = [set(rotterdam["company"])] + [set(s.frames[k]["company"].dropna()) for k in FOUR[1:]]
    planted = sum(1 for c in network if sum(c in ids for ids in sets) >= 3)
    assert 0 < planted <= o.at_least(3)


def test_ten_party_overlap_equals_pooled_ground_truth(fed_overlap: RunningFederation) -> None:
    s = fed_overlap.scenario
    with fed_overlap.client() as fed:
        o = fed.overlap(on="company", datasets=TEN, where=TEN_WHERE)
    filtered = s
    for name, condition in TEN_WHERE.items():
        filtered = _filtered(filtered, name, condition.replace(" = ", " == "))
    truth = ground_truth_overlap(filtered, "company", TEN)
    assert o.exact and len(o.datasets) == 10
    assert {p: int(c) for p, c in o.counts.items() if c} == truth
    assert len(o.patterns) == 2**10 - 1
    sizes = {name: len(set(filtered.frames[name]["company"].dropna())) for name in TEN}
    assert o.set_sizes == sizes and min(sizes.values()) >= 100
    assert o.pairwise.loc["om.cases", "kmar.crossings"] == sum(
        c for p, c in truth.items() if {"om.cases", "kmar.crossings"} <= p
    )
    assert o.at_least(5) == sum(c for p, c in truth.items() if len(p) >= 5) > 0


def test_coordinator_sees_only_fully_blinded_tokens(fed_overlap: RunningFederation) -> None:
    s = fed_overlap.scenario
    pair = ["douane.declarations", "fiod.investigations"]
    with fed_overlap.client() as fed:
        first = fed.overlap(on="company", datasets=pair)
        second = fed.overlap(on="company", datasets=pair)
    assert first.counts == second.counts
    record = fed_overlap.root / "record"
    ids = sorted(set().union(*(set(s.frames[k]["company"].dropna()) for k in pair)))
    finals: dict[str, set[bytes]] = {}
    for result in (first, second):
        files = sorted(record.glob(f"{result.job_id}-*.bin"))
        assert files, "the coordinator recorded nothing"
        blobs = [f.read_bytes() for f in files]
        everything = b"\x00".join(blobs)
        for raw in ids[:400]:
            assert raw.encode() not in everything
            digest = hashlib.sha512(raw.encode()).digest()
            assert digest[:TOKEN_BYTES] not in everything
            assert hashlib.sha512(DOMAIN + raw.encode()).digest()[:TOKEN_BYTES] not in everything
        tokens: set[bytes] = set()
        pieces = 0
        for blob in blobs:
            reply = pb.JobResponse.FromString(blob).overlap
            pieces = max(pieces, reply.chunk_count)
            if reply.chunk and not reply.sealed:
                tokens.update(unpack_tokens(reply.chunk))
        assert pieces > 1, "hops larger than the message limit travel in chunks"
        # Shared entities have the same final token in both sets: the union has one per entity.
        assert len(tokens) == sum(first.counts.values())
        # No token is the bare hash to the group (an unblinded element) of any identifier.
        assert tokens.isdisjoint(hash_to_group(ids))
        finals[result.job_id] = tokens
    a, b = finals.values()
    assert a.isdisjoint(b), "tokens of two jobs over the same data must not link"


def _blind_entries(fed_overlap: RunningFederation, node: str, job_id: str) -> list[dict]:
    state = fed_overlap.root / "state" / node / "audit.log"
    entries = [json.loads(line) for line in state.read_text().splitlines() if line.strip()]
    return [
        e["payload"] for e in entries if e["payload"].get("overlap") == job_id and "blinded" in e["payload"]
    ]


def test_nodes_answer_from_their_offline_phase(fed_overlap: RunningFederation) -> None:
    """Once a node has pre-blinded its column, a job takes its own tokens from there: same answer.

    Douane reads CSV through DuckDB, Belastingdienst reads PostgreSQL: both offline phases.
    """
    fed = fed_overlap.client()
    pair = FOUR[:2]
    baseline = fed.overlap(on="company", datasets=pair).counts
    shares: dict[str, tuple[int, int]] = {}
    # The offline phase runs in the background after start and after each job, at the lowest CPU
    # priority: on a machine busy with the rest of the suite it may need a minute or two.
    deadline = time.monotonic() + 150
    for _ in range(60):
        result = fed.overlap(on="company", datasets=pair)
        assert result.counts == baseline
        for node in ("douane", "belastingdienst"):
            entries = _blind_entries(fed_overlap, node, result.job_id)
            assert len(entries) == 1
            shares[node] = (entries[0]["preblinded"], entries[0]["blinded"])
        if all(used for used, _ in shares.values()) or time.monotonic() > deadline:
            break
        time.sleep(1.5)
    for node, (used, blinded) in shares.items():
        assert blinded > 0 and used == blinded, f"{node}: {used} of {blinded} own tokens pre-blinded"


def test_progress_follows_the_ring_to_the_end(fed_overlap: RunningFederation) -> None:
    seen: list[JobProgress] = []
    with fed_overlap.client() as fed:
        result = fed.overlap(on="company", datasets=FOUR, progress=seen.append)
        assert result.at_least(1) > 0
        # Another progress id, or a malformed one, gets nothing or a clear refusal.
        request = build_request("company", FOUR[:2], None, None, "", None)
        request.progress_id = "not valid!"
        refused = fed._call("Overlap", request)
    assert seen, "no progress was reported"
    last = seen[-1]
    assert (last.phase, last.step, last.steps) == ("done", len(FOUR) + 2, len(FOUR) + 2)
    steps = [p.step for p in seen]
    assert steps == sorted(steps), steps
    assert not refused.ok and refused.error_rule == "malformed_request"
    assert "progress_id" in refused.error


def test_dp_overlap_is_noisy_and_charges_every_dataset_once(fed_overlap: RunningFederation) -> None:
    project = "overlap-dp"
    with fed_overlap.client() as fed:
        exact = fed.overlap(on="company", datasets=FOUR)
        noisy = fed.overlap(on="company", datasets=FOUR, epsilon=1.0, project=project)
        budget = fed.budget(project)
    assert noisy.epsilon == pytest.approx(1.0) and noisy.noise_sd > 0 and noisy.ci_half_width > 0
    assert noisy.counts != exact.counts
    assert noisy.malformed == dict.fromkeys(FOUR, None)  # an exact count would be unprotected
    for key in FOUR:
        node, dataset = key.split(".")
        line = budget[(budget["node"] == node) & (budget["dataset"] == dataset)].iloc[0]
        # Once for the release and once for the noisy set-size check before it.
        assert line["releases"] == 2, key
        assert line["spent_epsilon"] == pytest.approx(1.0 + CHECK, rel=1e-6), key
    others = budget[~(budget["node"] + "." + budget["dataset"]).isin(FOUR)]
    assert (others["releases"] == 0).all()
    nodes = {n["node"]: n for n in noisy.nodes}
    assert all(nodes[k]["cost"]["epsilon"] == pytest.approx(1.0 + CHECK) for k in FOUR)


@pytest.mark.parametrize(
    ("datasets", "where", "rule"),
    [
        (["politie.signals", "douane.declarations"], None, "identifier_not_allowed"),
        (
            ["douane.declarations", "belastingdienst.vat_returns"],
            {"douane.declarations": "port = 'Moerdijk' AND year = 2019 AND goods_category = 'precursors'"},
            # Decided on the data: one undifferentiated failure, no party's rule (protocols/refusals.py).
            "not_computed",
        ),
        (
            ["douane.declarations", "fiod.investigations"],
            {"douane.declarations": "port = 'Atlantis'"},
            "value_outside_domain",
        ),
        (
            ["douane.declarations", "fiod.investigations"],
            {"fiod.investigations": "company = '12345678'"},
            "identifier_column",
        ),
    ],
)
def test_nodes_refuse_with_their_rule(
    fed_overlap: RunningFederation, datasets: list[str], where: dict[str, str] | None, rule: str
) -> None:
    with fed_overlap.client() as fed, pytest.raises(FederationError) as info:
        fed.overlap(on="company", datasets=datasets, where=where)
    assert info.value.rule == rule, str(info.value)


def test_a_refusal_on_the_data_names_no_party_and_stays_in_the_nodes_audit(
    fed_overlap: RunningFederation,
) -> None:
    """Exact mode: the size check is on the exact size (no budget to charge), but the analyst still
    learns only that the job could not be computed, not which party or rule."""
    tiny = {"douane.declarations": "port = 'Moerdijk' AND year = 2019 AND goods_category = 'precursors'"}
    with fed_overlap.client() as fed, pytest.raises(FederationError) as info:
        fed.overlap(on="company", datasets=FOUR[:2], where=tiny)
    assert (info.value.rule, info.value.message) == (NOT_COMPUTED, OVERLAP_NOT_COMPUTED)
    with fed_overlap.client() as fed:
        record = fed.jobs(limit=1).iloc[0]
    assert record["status"] == "failed" and record["nodes"].count(NOT_COMPUTED) == 2
    log = (fed_overlap.root / "state" / "douane" / "audit.log").read_text().splitlines()
    last = [json.loads(line) for line in log if '"refused"' in line][-1]
    assert last["payload"]["rule"] == "set_too_small"


@pytest.mark.parametrize(
    ("where", "rule"),
    [
        ("port = ", "malformed_sql"),
        ("port = 'Rotterdam' GROUP BY port", "malformed_sql"),
        ("port = 'Rotterdam'; DROP TABLE x", "malformed_sql"),
        ("upper(port) = 'ROTTERDAM'", "unsupported_expression"),
    ],
)
def test_malformed_where_is_refused_before_sending(
    fed_overlap: RunningFederation, where: str, rule: str
) -> None:
    with fed_overlap.client() as fed, pytest.raises(FederationError) as info:
        fed.overlap(on="company", datasets=FOUR[:2], where={"douane.declarations": where})
    assert info.value.rule == rule, str(info.value)


def test_non_identifiers_and_absent_nodes_are_refused(fed_overlap: RunningFederation) -> None:
    with fed_overlap.client() as fed:
        with pytest.raises(FederationError) as info:
            fed.overlap(on="port", datasets=FOUR[:2])
        assert info.value.rule == "not_identifier"
        with pytest.raises(FederationError) as info:
            fed.overlap(on="person", datasets=["politie.incidents", "douane.declarations"])
        assert info.value.rule == "unknown_column"
        with pytest.raises(FederationError) as info:
            fed.overlap(on="company", datasets=["douane.declarations", "rivm.registrations"])
        assert info.value.rule == "node_unreachable"


def _expected_sum(s: Scenario, query: str, present_at: list[str]) -> pd.DataFrame:
    base = s.frames["douane.declarations"].query(query)
    present = set.intersection(*(set(s.frames[k]["company"].dropna()) for k in present_at))
    rows = base[base["company"].isin(present)].copy()
    rows["rank"] = rows["goods_category"].map({g: i for i, g in enumerate(GOODS)})
    per = rows.groupby("company").agg(rank=("rank", "min"), value=("value", "sum"))
    per["value"] = per["value"].clip(0, 2_000_000 * s.max_rows_per_unit("douane.declarations")).round()
    per["goods_category"] = [GOODS[r] for r in per["rank"]]
    out = per.groupby("goods_category").agg(count=("value", "size"), sum=("value", "sum"))
    return out.reindex(list(GOODS), fill_value=0)


def test_exact_intersection_sum_per_group(fed_overlap: RunningFederation) -> None:
    present_at = ["belastingdienst.vat_returns", "politie.incidents"]
    with fed_overlap.client() as fed:
        df = fed.overlap_aggregate(
            on="company",
            base="douane.declarations",
            present_at=present_at,
            group_by="goods_category",
            sum="value",
            where={"douane.declarations": "port = 'Moerdijk' AND year = 2023"},
        )
    expected = _expected_sum(fed_overlap.scenario, "port == 'Moerdijk' and year == 2023", present_at)
    got = df.set_index("goods_category")
    assert list(got.index) == list(GOODS)
    assert got["count"].sum() > 0
    for goods in GOODS:
        assert int(got.loc[goods, "count"]) == int(expected.loc[goods, "count"]), goods
        assert float(got.loc[goods, "sum"]) == pytest.approx(float(expected.loc[goods, "sum"]), abs=0.5), (
            goods
        )


def test_cli_prints_patterns_and_writes_the_chart(fed_overlap: RunningFederation, tmp_path: Path) -> None:
    import subprocess
    import sys

    chart = tmp_path / "overlap.png"
    done = subprocess.run(
        [
            sys.executable, "-m", "federation.cli", "overlap", "--on", "company",
            "--dataset", "douane.declarations", "--dataset", "fiod.investigations",
            "--where", f"douane.declarations={ROTTERDAM_2023}",
            "--coordinator", fed_overlap.address, "--plot", str(chart), "--format", "csv",
        ],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, FEDERATION_TLS_DIR=str(fed_overlap.root / "pki" / "kits" / "analyst")),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "douane.declarations,fiod.investigations,n_datasets,count"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = subprocess.run(
        [
            sys.executable, "-m", "federation.cli", "overlap", "--on", "company",
            "--dataset", "douane.declarations", "--dataset", "fiod.investigations",
            "--coordinator", fed_overlap.address, "--top", "1",
        ],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, FEDERATION_TLS_DIR=str(fed_overlap.root / "pki" / "kits" / "analyst")),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "the 1 largest of 3 patterns; --top 0 shows all" in table.stderr


def test_dp_intersection_sum_is_noisy_and_charged(fed_overlap: RunningFederation) -> None:
    project = "overlap-sum"
    with fed_overlap.client() as fed:
        df = fed.overlap_aggregate(
            on="company",
            base="douane.declarations",
            present_at=["fiod.investigations"],
            group_by="goods_category",
            sum="value",
            where={"douane.declarations": "port = 'Moerdijk' AND year = 2023"},
            epsilon=2.0,
            project=project,
        )
        budget = fed.budget(project)
    noise = df.attrs["noise"]
    assert df.attrs["epsilon"] == pytest.approx(2.0)
    assert noise["count"]["sd"] > 0 and noise["sum"]["sd"] > noise["count"]["sd"]
    assert list(df["goods_category"]) == list(GOODS)
    charged = budget[budget["releases"] > 0]
    assert sorted(charged["node"] + "." + charged["dataset"]) == [
        "douane.declarations",
        "fiod.investigations",
    ]
    assert (charged["spent_epsilon"] - (2.0 + CHECK)).abs().max() < 1e-6
