"""Secure queries end to end: SecAgg+ with distributed DP, over real node processes and real gRPC.

The coordinator runs in this process (the real ``Coordinator`` over mutual TLS) so a test can
watch its rounds and kill a node at an exact point of the protocol; the nodes are OS processes.
Datasets: ``signals`` at four partners, and Douane's ``declarations`` split over three nodes (as
if three customs offices each held a part), with Douane's policy requiring secure release.
"""

from __future__ import annotations

import os
import signal
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator import secure_query
from coordinator.config import load_coordinator_config
from coordinator.service import Coordinator, fan_out
from federation.client import Client
from federation.processes import LocalFederation, free_port
from federation.query import parse_query
from federation.scenario import Scenario, generate, write_scenario
from privacy.accounting import epsilon_at_delta
from privacy.dp import NoiseShare, integer_noise_share, plan_noise, release_counts
from protocols import federation_pb2 as pb
from protocols import secagg_messages as m
from protocols.errors import FederationError
from tests.integration.conftest import SEED, project_entry

ROWS = 4000
NODES = ["douane", "kmar", "politie", "fiod"]
SPLIT = ["douane", "kmar", "politie"]  # nodes that serve a part of Douane's declarations
# Listed projects, each with its own budget (other names share the development catch-all's).
PROJECTS = (
    "secure-dp-epsilon",
    "secure-dp-rho",
    "secure-rows",
    "secure-fail",
    "secure-fail-ok",
    "secure-bounds",
)
MIN_GROUP = 10


@dataclass
class SecureFederation:
    procs: LocalFederation
    coordinator: Coordinator
    scenario: Scenario
    address: str
    root: Path

    def client(self, **kwargs: object) -> Client:
        return Client(self.address, tls_dir=self.root / "pki" / "kits" / "analyst", **kwargs)  # type: ignore[arg-type]


def _dataset_block(toml: str, name: str) -> str:
    start = toml.index(f'[[datasets]]\nname = "{name}"')
    end = toml.find("\n[[datasets]]\n", start + 1)
    return toml[start:] if end < 0 else toml[start : end + 1]


def _split_declarations(root: Path, paths: dict[str, Path]) -> None:
    """Douane's declarations rows go to three nodes by company; Douane requires secure release."""
    source = root / "data" / "douane" / "declarations.csv"
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    unit = next(c for c in frame.columns if "kvk" in c.lower())
    part = frame[unit].map(lambda v: zlib.crc32(str(v).encode()) % len(SPLIT))
    douane = paths["douane"].read_text()
    block = _dataset_block(douane, "declarations")
    for i, node in enumerate(SPLIT):
        target = root / "data" / node / "declarations.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame[part == i].to_csv(target, index=False)
        if node != "douane":
            text = paths[node].read_text().rstrip("\n") + "\n\n"
            paths[node].write_text(text + block.replace("data/douane/", f"data/{node}/"))
    secured = block.replace(
        "\n[[datasets.columns]]", '\n[datasets.policy]\nrelease = "secure"\n\n[[datasets.columns]]', 1
    )
    paths["douane"].write_text(douane.replace(block, secured))


def _start(root: Path) -> SecureFederation:
    address = f"127.0.0.1:{free_port()}"
    paths = write_scenario(root, seed=SEED, rows=ROWS, coordinator=address, formats={"douane": "csv"})
    text = paths["coordinator"].read_text().replace("heartbeat_seconds = 5", "heartbeat_seconds = 1")
    paths["coordinator"].write_text(text + "".join(project_entry(name) for name in PROJECTS))
    for node in NODES:
        # Exact mode unless the analyst names a budget: answers compare with pandas to the cent.
        # These tests ask exact secure queries in any order; the differencing check refuses some
        # orders by design (a total over a finer secure grouping needs DP) and is tested on its own
        # in tests/attacks/test_differencing.py, so it is off here.
        text = paths[node].read_text()
        policy = "[policy]\ndp_required = false\ndifferencing_history = 0\n"
        paths[node].write_text(text.replace("[policy]\n", policy, 1))
    _split_declarations(root, paths)
    coordinator = Coordinator(load_coordinator_config(paths["coordinator"]))
    coordinator.start()
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={n: paths[n] for n in NODES},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    for node in NODES:
        procs.start_node(node)
    try:
        procs.wait_for_nodes(set(NODES), timeout=90)
    except FederationError:
        procs.stop_all()
        coordinator.stop()
        raise
    return SecureFederation(procs, coordinator, generate(SEED, ROWS), address, root)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureFederation]:
    running = _start(tmp_path_factory.mktemp("secure"))
    try:
        yield running
    finally:
        running.procs.stop_all()
        running.coordinator.stop()


def _units(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["company"].notna()]


def _declarations(fed: SecureFederation) -> pd.DataFrame:
    return _units(fed.scenario.frames["douane.declarations"])


def _signals_total(fed: SecureFederation, nodes: list[str]) -> int:
    return sum(len(_units(fed.scenario.frames[f"{n}.signals"])) for n in nodes)


def _outcomes(df: pd.DataFrame) -> dict[str, dict]:
    return {n["node"]: n for n in df.attrs["nodes"]}


# --------------------------------------------------------------------------- exact answers


def test_secure_counts_equal_the_plain_answer(fed: SecureFederation) -> None:
    sql = (
        "SELECT region, COUNT(*) AS n, COUNT_DISTINCT_PER_NODE(company) AS companies FROM signals "
        "WHERE year >= 2021 GROUP BY region"
    )
    with fed.client() as client:
        plain = client.query(sql).set_index("region")
        secure = client.query(sql, secure=True).set_index("region")
    assert set(secure.attrs["answered"]) == set(NODES)
    released = plain.dropna()
    assert len(released) >= 5, "the comparison needs released groups"
    for region, row in released.iterrows():
        # The plain answer suppresses a group any node holds too few units of; the secure one
        # decides on the sum, so every group released in plain is released here, with equal values.
        assert int(secure.loc[region, "n"]) == int(row["n"])
        assert int(secure.loc[region, "companies"]) == int(row["companies"])
    assert not secure.attrs["noise"]


def test_secure_sums_match_pandas_and_policy_routes_to_secure(fed: SecureFederation) -> None:
    sql = (
        "SELECT port, COUNT(*) AS n, SUM(value) AS total, AVG(value) AS mean FROM declarations GROUP BY port"
    )
    with fed.client() as client:
        df = client.query(sql).set_index("port")  # no secure=True: Douane's policy demands it
    assert set(df.attrs["answered"]) == set(SPLIT)
    assert all(n["audit_digest"] for n in df.attrs["nodes"])
    truth = _declarations(fed).groupby("port")["value"].agg(["size", "sum", "mean"])
    resolution = len(SPLIT) * 0.5 / 100  # three group sums, each rounded to the cent grid
    for port, want in truth.iterrows():
        assert int(df.loc[port, "n"]) == int(want["size"])
        assert abs(float(df.loc[port, "total"]) - float(want["sum"])) <= resolution + 1e-6
        assert float(df.loc[port, "mean"]) == pytest.approx(float(want["mean"]), abs=resolution)


def test_node_refuses_plain_query_on_secure_only_dataset(fed: SecureFederation) -> None:
    spec = parse_query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port")
    douane = fed.coordinator.registry.get("douane")
    assert douane is not None
    job = pb.JobRequest(job_id=uuid.uuid4().hex, query=spec, requested_by="test")
    _, outcomes = fan_out([douane], job, 30)
    assert outcomes[0].status == "refused" and outcomes[0].rule == "secure_required"
    assert "declarations" in outcomes[0].reason


def test_node_refuses_too_small_secure_aggregation(fed: SecureFederation) -> None:
    sessions = [fed.coordinator.registry.get(n) for n in ("kmar", "politie")]
    assert all(s is not None for s in sessions)
    spec = parse_query("SELECT COUNT(*) AS n FROM signals")
    response, status = secure_query.run_secure_query(sessions, spec, uuid.uuid4().hex, "test", 30)  # type: ignore[arg-type]
    assert status == "failed" and not response.ok
    assert response.error_rule == "secure_min_nodes"
    assert "at least 3" in response.error and "kmar" in response.error


# --------------------------------------------------------------------------- what the coordinator sees


def _plain_vector(frame: pd.DataFrame, keys: list[tuple]) -> np.ndarray:
    """This node's exact contribution: COUNT(*) then COUNT(DISTINCT company) per group, as encoded."""
    grouped = _units(frame).groupby(["region", "phenomenon", "year"])["company"]
    rows, units = grouped.size(), grouped.nunique()
    counts = [int(rows.get(k, 0)) for k in keys] + [int(units.get(k, 0)) for k in keys]
    return np.asarray(counts, dtype=np.int64).view(np.uint64)


def _chi_square_top_byte(words: np.ndarray) -> float:
    observed = np.bincount((words >> np.uint64(56)).astype(np.int64), minlength=256)
    expected = len(words) / 256
    return float(((observed - expected) ** 2 / expected).sum())


def _critical(df: int, z: float) -> float:
    # Wilson-Hilferty: the chi-square quantile from the normal quantile z.
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def test_coordinator_only_receives_masked_vectors(
    fed: SecureFederation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secure_query.RECORD_ENV, str(tmp_path))
    sql = "SELECT region, phenomenon, year, COUNT(*) AS n FROM signals GROUP BY region, phenomenon, year"
    with fed.client() as client:
        df = client.query(sql, secure=True)
    folder = tmp_path / df.attrs["job_id"]
    received = sorted(p.name for p in folder.iterdir())
    assert received == sorted(f"round{r}-{n}.pb" for r in (0, 2, 3, 4) for n in NODES)
    masked_words = []
    for node in NODES:
        start = pb.SecureReply.FromString((folder / f"round0-{node}.pb").read_bytes())
        m.AdvertiseKeys.from_bytes(start.payload)  # round 0 carries keys and the layout, no values
        keys = [tuple(getattr(v, v.WhichOneof("kind")) for v in k.key) for k in start.keys]
        reply = pb.SecureReply.FromString((folder / f"round3-{node}.pb").read_bytes())
        masked = m.MaskedInput.from_bytes(reply.payload).vector
        plain = _plain_vector(fed.scenario.frames[f"{node}.signals"], keys)
        assert masked.shape == plain.shape and plain.any()
        assert np.count_nonzero(masked == plain) == 0
        masked_words.append(masked)
        # Plain counts sit in the lowest byte values: the same test rejects them outright.
        assert _chi_square_top_byte(plain) > _critical(255, 4.75)
    words = np.concatenate(masked_words)
    assert len(words) >= 5 * 256
    assert _chi_square_top_byte(words) < _critical(255, 4.75)  # p ~ 1e-6: uniform top bytes


# --------------------------------------------------------------------------- distributed DP


def _spent(client: Client, project: str) -> dict[str, tuple[float, int]]:
    budget = client.budget(project)
    rows = budget[budget["dataset"] == "declarations"]
    return {r.node: (r.spent_epsilon, r.releases) for r in rows.itertuples()}


@pytest.mark.parametrize("privacy", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_distributed_dp_answer_and_ledger(fed: SecureFederation, privacy: Mapping[str, float]) -> None:
    project = "secure-dp-" + next(iter(privacy))
    sql = "SELECT port, COUNT(*) AS n, AVG(value) AS mean FROM declarations GROUP BY port"
    with fed.client() as client:
        df = client.query(sql, project=project, **privacy).set_index("port")
        spent = _spent(client, project)
    truth = _declarations(fed).groupby("port")["value"].agg(["size", "mean"])
    noise = df.attrs["noise"]
    assert set(noise) == {"n", "mean"}
    for item in noise["n"]:
        port = item["group"]["port"]
        lo, hi = item["ci95"]
        assert item["sd"] > 0 and lo < float(df.loc[port, "n"]) < hi
        assert abs(float(df.loc[port, "n"]) - float(truth.loc[port, "size"])) < 8 * item["sd"]
    for item in noise["mean"]:
        lo, hi = item["ci95"]
        assert item["sd"] > 0 and lo < hi
    assert set(spent) == set(SPLIT)
    for node, (epsilon, releases) in spent.items():
        assert releases == 1, f"{node} charged {releases} times"
        if "epsilon" in privacy:
            # Served as one discrete Gaussian at rho = epsilon^2 / 2 (privacy/distributed.py),
            # charged and read as epsilon at the budget's delta.
            assert epsilon == pytest.approx(epsilon_at_delta(privacy["epsilon"] ** 2 / 2, 1e-6), rel=1e-6)
    for node, outcome in _outcomes(df.reset_index()).items():
        assert outcome["status"] == "answered" and outcome["cost"]["rho"] > 0, node


def test_count_star_dp_query_sends_no_unit_block(
    fed: SecureFederation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a named budget, COUNT(*) doubles as the threshold count: one block, no distinct scan."""
    monkeypatch.setenv(secure_query.RECORD_ENV, str(tmp_path))
    sql = "SELECT region, phenomenon, year, COUNT(*) AS n FROM signals GROUP BY region, phenomenon, year"
    with fed.client() as client:
        df = client.query(sql, secure=True, epsilon=1.0, project="secure-rows")
    assert set(df.attrs["answered"]) == set(NODES)
    folder = tmp_path / df.attrs["job_id"]
    for node in NODES:
        start = pb.SecureReply.FromString((folder / f"round0-{node}.pb").read_bytes())
        assert [(c.role, c.aggregate, c.kind) for c in start.components] == [("value", 0, "count")]
        masked = m.MaskedInput.from_bytes(
            pb.SecureReply.FromString((folder / f"round3-{node}.pb").read_bytes()).payload
        )
        assert masked.vector.shape == (len(start.keys),)
    spec = parse_query(sql)
    assert secure_query.reuses_count(spec) is False  # no budget named: the unit block stays
    spec.privacy.epsilon = 1.0
    assert secure_query.reuses_count(spec) is True
    spec.aggregates.add(function=pb.COUNT_DISTINCT, column="company", alias="c")
    assert secure_query.reuses_count(spec) is False


def _row_layout(noise: NoiseShare, n_groups: int) -> pb.SecureReply:
    layout = pb.SecureReply()
    for g in range(n_groups):
        layout.keys.add().key.add(text=f"g{g}")
    per_node = noise.per_node
    layout.components.add(
        role="value",
        aggregate=0,
        kind="count",
        scale=1.0,
        mechanism=per_node.mechanism,
        noise_scale=per_node.scale,
        noise_sd=per_node.sd,
        parts=per_node.parts,
    )
    return layout


@pytest.mark.parametrize("privacy", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_summed_row_count_threshold_holds_back_small_groups(privacy: Mapping[str, float]) -> None:
    """A group of MIN_GROUP - 1 units at R rows each, spread over four nodes that each add their
    share of noise (OpenDP), clears the coordinator's row threshold with probability <= 1e-3."""
    nodes, r, draws = 4, 5, 5000
    plan = plan_noise([("count", None)], r, n_groups=2, **privacy)
    noise = integer_noise_share(nodes, plan.threshold)
    layout = _row_layout(noise, 2)
    component = layout.components[0]
    rows_t = secure_query.noisy_threshold(component, nodes, MIN_GROUP, r)
    units_t = secure_query.noisy_threshold(component, nodes, MIN_GROUP)
    assert rows_t - units_t == (MIN_GROUP - 1) * (r - 1)
    small = (MIN_GROUP - 1) * r
    parts = [small // nodes + (1 if i < small % nodes else 0) for i in range(nodes)]
    sums = np.zeros(draws, dtype=np.int64)
    for part in parts:
        sums += np.asarray(release_counts([part] * draws, noise.per_node), dtype=np.int64)
    assert np.count_nonzero(sums >= rows_t) <= 15  # 5 expected at p = 1e-3, in the worst case
    spec = parse_query("SELECT phenomenon, COUNT(*) AS n FROM signals GROUP BY phenomenon")
    totals = np.asarray([small, rows_t + 1000], dtype=np.int64)
    rows = secure_query.assemble(spec, layout, totals, nodes, MIN_GROUP, max_rows_per_unit=r)
    assert not rows[1].suppressed and rows[1].cells[0].value == rows_t + 1000
    assert rows[0].suppressed
    assert rows[0].suppressed_by[0] == f"secure sum: min_group_size: summed row count below {rows_t}"


# --------------------------------------------------------------------------- dropouts


def _freeze(fed: SecureFederation, node: str) -> int:
    pid = fed.procs.procs[node].pid
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_node_stopped_before_is_left_out(fed: SecureFederation) -> None:
    # The client connects first, so the query starts within fiod's heartbeat window (it is asked).
    with fed.client() as client:
        client.nodes()
        pid = _freeze(fed, "fiod")
        try:
            df = client.query("SELECT COUNT(*) AS n FROM signals", secure=True, timeout=3)
        finally:
            os.kill(pid, signal.SIGCONT)
    outcome = _outcomes(df)["fiod"]
    assert outcome["status"] == "timeout" and "left out" in outcome["reason"]
    assert int(df["n"].iloc[0]) == _signals_total(fed, ["douane", "kmar", "politie"])
    fed.procs.wait_for_nodes(set(NODES), timeout=30)


def test_below_threshold_fails_and_names_the_dropped(fed: SecureFederation) -> None:
    with fed.client() as client:
        client.nodes()
        pids = [_freeze(fed, n) for n in ("kmar", "fiod")]
        try:
            with pytest.raises(FederationError) as info:
                client.query("SELECT COUNT(*) AS n FROM signals", secure=True, timeout=3)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
    assert info.value.rule == "secagg_threshold"
    assert "kmar" in str(info.value) and "fiod" in str(info.value)
    fed.procs.wait_for_nodes(set(NODES), timeout=30)


def test_job_that_fails_before_masked_input_costs_no_budget(fed: SecureFederation) -> None:
    """Nodes only check their budget at round 0 and charge when their masked input leaves."""
    project = "secure-fail"
    pids = [_freeze(fed, n) for n in ("kmar", "fiod")]
    try:
        with fed.client() as client, pytest.raises(FederationError) as info:
            client.query(
                "SELECT COUNT(*) AS n FROM signals", secure=True, epsilon=1.0, project=project, timeout=3
            )
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert info.value.rule == "secagg_threshold"
    fed.procs.wait_for_nodes(set(NODES), timeout=30)
    with fed.client() as client:
        # The resumed nodes have run their queued round 0 by the time they answer this.
        client.query("SELECT COUNT(*) AS n FROM signals", secure=True, epsilon=1.0, project=f"{project}-ok")
        failed, ok = client.budget(project), client.budget(f"{project}-ok")
    failed, ok = failed[failed["dataset"] == "signals"], ok[ok["dataset"] == "signals"]
    assert set(failed["node"]) == set(NODES), failed.to_string()
    assert (failed["releases"] == 0).all(), "a job that released nothing charged a ledger"
    # The check is not vacuous: the same query that completes is charged once at every node.
    assert set(ok["node"]) == set(NODES) and (ok["releases"] == 1).all(), ok.to_string()


def test_node_killed_after_masked_input_is_recovered(fed: SecureFederation) -> None:
    victim = fed.procs.procs["politie"]

    def kill_after_masked_input(job_id: str, rnd: int, replies: Mapping[str, pb.SecureReply]) -> None:
        if rnd == 3 and "politie" in replies:
            victim.kill()
            victim.wait(timeout=10)

    secure_query.observers.append(kill_after_masked_input)
    try:
        with fed.client() as client:
            df = client.query("SELECT COUNT(*) AS n FROM signals", secure=True, timeout=5)
    finally:
        secure_query.observers.remove(kill_after_masked_input)
        fed.procs.procs.pop("politie", None)
    assert victim.poll() is not None
    outcome = _outcomes(df)["politie"]
    assert outcome["status"] == "answered" and "recovered" in outcome["reason"]
    assert int(df["n"].iloc[0]) == _signals_total(fed, NODES)
    fed.procs.start_node("politie")
    fed.procs.wait_for_nodes(set(NODES), timeout=60)


def test_secure_noise_follows_per_query_bounds_and_rows(fed: SecureFederation) -> None:
    """Tighter clamping and fewer rows per unit shrink the one curator's noise the shares add up to."""
    sql = "SELECT SUM(value) AS total FROM declarations"
    project = "secure-bounds"
    with fed.client() as client:
        wide = client.query(sql, secure=True, epsilon=1.0, project=project)
        tight = client.query(sql, secure=True, epsilon=1.0, project=project, bounds={"value": (0, 50_000)})
        fewer = client.query(
            sql, secure=True, epsilon=1.0, project=project, bounds={"value": (0, 50_000)}, max_rows_per_unit=1
        )
    sd = [df.attrs["noise"]["total"][0]["sd"] for df in (wide, tight, fewer)]
    # Sensitivity k M on the fixed-point grid: M from 2 000 000 to 50 000 (one grid step aside).
    assert sd[0] / sd[1] == pytest.approx(40, rel=1e-3)
    assert sd[2] < sd[1]
    for df in (tight, fewer):
        assert float(df["total"].iloc[0]) >= 0 and df.attrs["noise"]["total"][0]["ci95"][0] >= 0
        assert set(df.attrs["answered"]) == set(SPLIT)
