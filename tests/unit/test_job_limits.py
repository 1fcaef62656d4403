"""The coordinator's per-job limits: the timeout cap and the jobs each analyst may run at once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from coordinator.config import load_coordinator_config
from coordinator.limits import JobRefused, JobSlots, job_timeout
from protocols.errors import ConfigError


@pytest.mark.parametrize("requested", [math.inf, -math.inf, math.nan, -1.0, 1e12, 300.5])
def test_timeouts_outside_the_cap_are_refused(requested: float) -> None:
    with pytest.raises(JobRefused) as info:
        job_timeout(requested, default=10.0, cap=300.0)
    assert info.value.rule == "invalid_timeout"
    assert "300" in info.value.message


def test_timeouts_inside_the_cap_are_kept_and_zero_is_the_default() -> None:
    assert job_timeout(0.0, default=10.0, cap=300.0) == 10.0
    assert job_timeout(0.0, default=900.0, cap=300.0) == 300.0
    assert job_timeout(300.0, default=10.0, cap=300.0) == 300.0
    assert job_timeout(0.25, default=10.0, cap=300.0) == 0.25


def test_slots_per_analyst_and_in_all() -> None:
    slots = JobSlots(per_caller=2, total=3)
    with slots.hold("ann"), slots.hold("ann"):
        with pytest.raises(JobRefused) as info, slots.hold("ann"):
            pass
        assert info.value.rule == "too_many_concurrent_jobs"
        with slots.hold("bob"):
            with pytest.raises(JobRefused) as info, slots.hold("cas"):
                pass
            assert info.value.rule == "coordinator_busy"
    # Released on the way out, also when the body raised.
    with pytest.raises(RuntimeError), slots.hold("ann"):
        raise RuntimeError("job failed")
    with slots.hold("ann"), slots.hold("ann"), slots.hold("bob"):
        pass


@pytest.mark.parametrize(
    "line",
    [
        "max_timeout_seconds = 0",
        "max_timeout_seconds = -3",
        "max_timeout_seconds = inf",
        "max_timeout_seconds = nan",
        'max_timeout_seconds = "60"',
        "max_concurrent_jobs_per_analyst = 0",
        "max_concurrent_jobs = 2.5",
        "max_concurrent_jobs = true",
    ],
)
def test_bad_limits_in_the_config_are_refused_with_the_key(tmp_path: Path, line: str) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(f"[coordinator]\ninsecure = true\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_coordinator_config(path)
    assert line.split(" ")[0] in info.value.message


def test_limits_have_safe_defaults(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text("[coordinator]\ninsecure = true\n")
    config = load_coordinator_config(path)
    assert config.max_timeout_seconds == 300.0
    assert config.max_concurrent_jobs_per_analyst == 4
    assert config.max_concurrent_jobs == 32
