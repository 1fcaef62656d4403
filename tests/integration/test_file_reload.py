"""Changed CSV and Parquet files are picked up by running nodes (real processes, real gRPC): on
the node's timer, on `federation node reload`, and never by mixing versions in one answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from federation import scenario as vocabulary
from nodes.config import load_node_config
from tests.integration.conftest import RunningFederation, _drop_schema, parallel_jobs, start_federation
from tests.integration.expected import assert_same, pooled

CASES = "SELECT status, COUNT(*) AS cases, SUM(seized_amount) AS seized FROM cases GROUP BY status"
DECLARATIONS = "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations GROUP BY port"
Where = Callable[[pd.DataFrame], pd.Series]


def _fast_checks(paths: dict[str, Path]) -> None:
    # OM looks for changes twice a second; Douane only on `federation node reload`.
    for node, seconds in (("om", 0.5), ("douane", 0.0)):
        raw = tomllib.loads(paths[node].read_text())
        raw["node"]["source_check_seconds"] = seconds
        paths[node].write_text(tomli_w.dumps(raw))
    parallel_jobs(paths)


@pytest.fixture(scope="module")
def files_fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("reload"), postgres_dsn, nodes=["om", "douane"], edit=_fast_checks
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _publish(fed: RunningFederation, key: str, where: Where | None) -> None:
    """Write the node's data file again with only the rows ``where`` keeps, the safe way: aside,
    then renamed over the old file."""
    node, name = key.split(".")
    shared, local = fed.scenario.frames[key], fed.scenario.local_frames[key]
    assert len(shared) == len(local)
    rows = local if where is None else local[where(shared).to_numpy()]
    path = next((fed.root / "data" / node).glob(f"{name}.*"))
    aside = path.with_name(f".{path.name}.new")
    if path.suffix == ".csv":
        rows.to_csv(aside, index=False)
    else:
        rows.to_parquet(aside, index=False)
    os.replace(aside, path)


def _cases(fed: RunningFederation, where: Where | None) -> pd.DataFrame:
    return pooled(
        fed.scenario,
        "cases",
        ["status"],
        {"status": list(vocabulary.STATUSES)},
        "person",
        {"cases": ("count", None), "seized": ("sum", "seized_amount")},
        where=where,
    )


def _declarations(fed: RunningFederation, where: Where | None) -> pd.DataFrame:
    return pooled(
        fed.scenario,
        "declarations",
        ["port"],
        {"port": list(vocabulary.PORTS)},
        "company",
        {"n": ("count", None), "total": ("sum", "value")},
        where=where,
    )


def _matches(df: pd.DataFrame, expected: pd.DataFrame, group_by: list[str]) -> bool:
    try:
        assert_same(df, expected, group_by)
    except AssertionError:
        return False
    return True


def _audit_kinds(fed: RunningFederation, node: str) -> list[dict[str, object]]:
    state = load_node_config(fed.paths[node]).state_dir
    entries = [json.loads(line) for line in (state / "audit.log").read_text().splitlines() if line.strip()]
    return [e for e in entries if str(e["kind"]).startswith("source_")]


def _reload(fed: RunningFederation, node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", "node", "reload", "--config", str(fed.paths[node])],
        capture_output=True,
        text=True,
        timeout=120,
    )


def recent(d: pd.DataFrame) -> pd.Series:
    return d["year"] >= 2021


def before_2023(d: pd.DataFrame) -> pd.Series:
    return d["year"] < 2023


def test_parquet_change_is_picked_up_on_the_timer(files_fed: RunningFederation) -> None:
    with files_fed.client() as client:
        assert_same(client.query(CASES), _cases(files_fed, None), ["status"])
        _publish(files_fed, "om.cases", recent)
        expected = _cases(files_fed, recent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _matches(client.query(CASES), expected, ["status"]):
                break
            time.sleep(0.5)
        assert_same(client.query(CASES), expected, ["status"])
    reloaded = [e for e in _audit_kinds(files_fed, "om") if e["kind"] == "source_reloaded"]
    assert reloaded and reloaded[-1]["payload"]["by"] == "timer"  # type: ignore[index]


def test_csv_change_is_picked_up_by_node_reload(files_fed: RunningFederation) -> None:
    with files_fed.client() as client:
        before = client.query(DECLARATIONS)
        assert_same(before, _declarations(files_fed, None), ["port"])
        _publish(files_fed, "douane.declarations", before_2023)
        time.sleep(1.5)  # no timer at Douane: the old version answers until the reload
        assert_same(client.query(DECLARATIONS), _declarations(files_fed, None), ["port"])
        done = _reload(files_fed, "douane")
        assert done.returncode == 0, done.stderr
        assert "dataset declarations: new version in use" in done.stdout
        # The reload answered once the new version was in: the next answer is from it.
        assert_same(client.query(DECLARATIONS), _declarations(files_fed, before_2023), ["port"])
    again = _reload(files_fed, "douane")
    assert again.returncode == 0 and "dataset declarations: unchanged" in again.stdout
    entries = _audit_kinds(files_fed, "douane")
    assert entries[-1]["kind"] == "source_reloaded" and entries[-1]["payload"]["by"] == "reload"  # type: ignore[index]


def test_jobs_during_reloads_answer_from_one_version(files_fed: RunningFederation) -> None:
    versions = [None, recent]
    expected = [_cases(files_fed, where) for where in versions]
    answers: list[pd.DataFrame] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        with files_fed.client() as client:
            for _ in range(5):
                if stop.is_set():
                    return
                try:
                    answers.append(client.query(CASES))
                except BaseException as exc:  # noqa: BLE001 - collected and reported below
                    failures.append(exc)

    workers = [threading.Thread(target=ask) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for i in range(4):
            _publish(files_fed, "om.cases", versions[i % 2])
            time.sleep(1.5)  # OM's timer swaps the new version in while jobs run
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)
    assert not failures, failures
    assert answers
    for df in answers:
        assert any(_matches(df, want, ["status"]) for want in expected), df
    with files_fed.client() as client:
        deadline = time.monotonic() + 30
        while not _matches(client.query(CASES), expected[1], ["status"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert_same(client.query(CASES), expected[1], ["status"])
