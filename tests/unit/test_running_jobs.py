"""The jobs a node holds between a SecAgg job's round 0 and its last round (secure queries and
model rounds alike): bounded in number and age, ids checked, a late round for a gone job refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nodes.secagg_steps import JOB_TTL_SECONDS, MAX_JOBS, RunningJobs
from nodes.validate import Refused


@dataclass
class _Job:
    started: float


def _rule(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(Refused) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    assert info.value.node == "douane"
    return info.value.rule


def test_admission_checks_ids_duplicates_and_room() -> None:
    now = [0.0]
    jobs: RunningJobs[_Job] = RunningJobs("douane", "secure job", lambda: now[0])
    assert _rule(jobs.admit, "") == "secure_job_id"
    assert _rule(jobs.admit, "a:b") == "secure_job_id"
    assert _rule(jobs.admit, "j", model="x" * 129) == "secure_job_id"
    for i in range(MAX_JOBS):
        jobs.admit(f"j{i}")
        jobs.add(f"j{i}", _Job(now[0]))
    assert _rule(jobs.admit, "j0") == "secure_duplicate"
    assert _rule(jobs.add, "j0", _Job(now[0])) == "secure_duplicate"
    assert _rule(jobs.admit, "another") == "secure_busy"
    # Past their age the jobs are forgotten: room again, and their later rounds are refused.
    now[0] = JOB_TTL_SECONDS + 1
    assert _rule(jobs.running, "j1") == "secure_unknown_job"
    jobs.admit("another")
    assert len(jobs) == 0


def test_a_running_job_is_found_until_dropped() -> None:
    jobs: RunningJobs[_Job] = RunningJobs("douane", "model round", lambda: 10.0)
    job = _Job(5.0)
    jobs.add("m1", job)
    assert jobs.running("m1") is job
    jobs.drop("m1")
    with pytest.raises(Refused, match="no running model round m1"):
        jobs.running("m1")
