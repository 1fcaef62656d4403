"""Progress of long jobs at the coordinator: per analyst, bounded, and kept a while after the end."""

from __future__ import annotations

import pytest

from coordinator import progress as board_module
from coordinator.overlap import progress_steps
from coordinator.progress import ProgressBoard, ProgressIdInvalid


def test_an_analyst_reads_only_their_own_job() -> None:
    board = ProgressBoard()
    report = board.start("alice", "job-1", progress_steps(4))
    report("re-blind", 3, "round 2 of 3")
    mine = board.read("alice", "job-1")
    assert (mine.found, mine.phase, mine.step, mine.steps, mine.detail) == (
        True,
        "re-blind",
        3,
        6,
        "round 2 of 3",
    )
    assert not board.read("bob", "job-1").found
    assert not board.read("alice", "job-2").found


def test_a_failure_keeps_the_step_it_reached_and_steps_are_capped() -> None:
    board = ProgressBoard()
    report = board.start("alice", "p", 6)
    report("re-blind", 4, "")
    report("failed", 0, "node fiod did not answer within 3s")
    state = board.read("alice", "p")
    assert (state.phase, state.step, state.detail) == ("failed", 4, "node fiod did not answer within 3s")
    report("done", 99, "")
    assert board.read("alice", "p").step == 6


def test_no_id_means_no_entry_and_a_bad_id_is_refused() -> None:
    board = ProgressBoard()
    board.start("alice", "", 6)("blind", 1, "")
    assert not board.read("alice", "").found
    for bad in ("has space", "x" * 65, "semi;colon", "ünïcode"):
        with pytest.raises(ProgressIdInvalid) as info:
            board.start("alice", bad, 6)
        assert info.value.rule == "malformed_request"


def test_entries_expire_after_the_job_ends_and_the_board_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    board = ProgressBoard(clock=lambda: now[0])
    board.start("alice", "running", 6)("blind", 1, "")
    board.start("alice", "ended", 6)("done", 6, "")
    now[0] = board_module.KEEP_SECONDS + 1
    assert board.read("alice", "running").found, "a running job never expires"
    assert not board.read("alice", "ended").found
    monkeypatch.setattr(board_module, "MAX_ENTRIES", 3)
    for i in range(5):
        board.start("bob", f"j{i}", 6)
    assert [board.read("bob", f"j{i}").found for i in range(5)] == [False, False, True, True, True]
