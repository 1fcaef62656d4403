"""A short soak (bench/soak.py): mixed jobs against six real node processes while one of them is
stopped and started again mid-run. Every job ends in an answer or a refusal naming its rule, no
node's ledger charges a job twice or charges a job the coordinator does not list, and file
descriptors of the long-lived coordinator do not pile up."""

from __future__ import annotations

from pathlib import Path

from bench.soak import CYCLE, Soak, run

JOBS = 120
RESTART_EVERY = 60  # one restart, at job 61, while the jobs go on


def test_short_soak_loses_no_job_and_charges_no_budget_twice(tmp_path: Path) -> None:
    with Soak(tmp_path, rows=1000) as soak:
        report = run(soak, JOBS, RESTART_EVERY, window=RESTART_EVERY)
    assert report.lost == [], report.lines()
    assert len(report.restarts) == 1, report.restarts
    outcomes = sum((w.outcomes for w in report.windows), start=type(report.windows[0].outcomes)())
    assert sum(outcomes.values()) == JOBS
    # Most jobs are answered; refusals name a rule (e.g. a party of an overlap was restarting).
    assert outcomes["answered"] >= JOBS * 0.8, outcomes
    assert all(k == "answered" or k.startswith("refused:") for k in outcomes), outcomes
    ledger = report.ledger
    # Budget reads are not jobs of the job list; every other job is, refused ones too.
    assert ledger["jobs_listed"] >= (JOBS - JOBS // len(CYCLE) * 2) * 0.9, ledger
    assert ledger.get("charges", 0) > 0, ledger  # secure and overlap jobs did charge
    for bad in (
        "charged_twice",
        "charged_job_not_in_coordinator_list",
        "recorded_by_coordinator_but_not_charged",
    ):
        assert ledger.get(bad, 0) == 0, ledger
    # Each snapshot waits for a restart to end, so it sees all six nodes; their descriptors and the
    # coordinator's (one link per node) are back where they were once the node is back.
    assert all(len(w.nodes) == 6 for w in report.windows), [w.nodes for w in report.windows]
    first, last = report.windows[0], report.windows[-1]
    assert last.coordinator[1] <= first.coordinator[1] + 2, (first.coordinator, last.coordinator)
    node_fds = [sum(fd for _, fd in w.nodes.values()) for w in (first, last)]
    assert node_fds[1] <= node_fds[0] + 6, node_fds
