"""Budget ledger: budgets, refusals, idempotent charges, reopening, and races across threads and processes."""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
from pathlib import Path

import pytest

from privacy.accounting import Cost, epsilon_at_delta
from privacy.ledger import (
    BudgetExceeded,
    BudgetMissing,
    BudgetPolicy,
    DatasetBudgetExceeded,
    Ledger,
    LedgerError,
)


def _pure(epsilon: float) -> Cost:
    return Cost(epsilon=epsilon, rho=epsilon**2 / 2)


def test_set_show_and_history(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "douane")
    ledger.set_budget("declarations", "mit-2024", 4.0, 1e-6, by="officer-a")
    ledger.set_budget("declarations", "mit-2024", 5.0, 1e-7, by="officer-b")
    ledger.set_budget("declarations", "ports", 2.0, 0.0, by="officer-a")
    ledger.charge("job-1", "declarations", "mit-2024", _pure(1.5), note="seizures by port")

    rows = {(s.dataset, s.project): s for s in ledger.show()}
    mit = rows[("declarations", "mit-2024")]
    assert (mit.total_epsilon, mit.delta, mit.charges, mit.is_default) == (5.0, 1e-7, 1, False)
    assert mit.spent_epsilon == pytest.approx(1.5) and mit.remaining_epsilon == pytest.approx(3.5)
    assert ledger.remaining("declarations", "mit-2024") == pytest.approx(3.5)
    assert ledger.remaining("declarations", "ports") == 2.0
    assert [s.project for s in ledger.show(project="ports")] == ["ports"]

    history = ledger.history(project="mit-2024")
    assert [(h.kind, h.epsilon, h.by) for h in history] == [
        ("budget", 4.0, "officer-a"),
        ("budget", 5.0, "officer-b"),
        ("charge", 1.5, "job-1"),
    ]
    assert history[2].note == "seizures by port" and history[2].rho == pytest.approx(1.125)
    assert len(ledger.history()) == 4
    assert ledger.history(dataset="other") == []


def test_refusal_names_node_dataset_project_request_and_remainder(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "belastingdienst")
    ledger.set_budget("vat_returns", "tbml", 1.0, 1e-6, by="fg")
    ledger.charge("a", "vat_returns", "tbml", _pure(0.75))
    with pytest.raises(BudgetExceeded) as err:
        ledger.charge("b", "vat_returns", "tbml", _pure(0.5))
    e = err.value
    assert e.rule == "budget" and e.node == "belastingdienst"
    assert e.requested == pytest.approx(0.5) and e.remaining == pytest.approx(0.25)
    text = str(e)
    for part in ("belastingdienst", "vat_returns", "tbml", "0.5", "0.25", "budget"):
        assert part in text
    assert "\n" not in text
    assert [c.job_id for c in ledger.charges()] == ["a"]  # nothing recorded for the refusal


def test_charge_is_idempotent_per_job_id(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "om")
    ledger.set_budget("cases", "p", 1.0, 1e-6, by="fg")
    first = ledger.charge("job-7", "cases", "p", _pure(0.6))
    again = ledger.charge("job-7", "cases", "p", _pure(0.6))  # a retry after a crash
    assert again == first
    assert ledger.remaining("cases", "p") == pytest.approx(0.4)
    with pytest.raises(LedgerError) as err:
        ledger.charge("job-7", "cases", "p", _pure(0.1))
    assert err.value.rule == "job_id_reused"


def test_dry_run_checks_without_recording(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "douane")
    ledger.set_budget("declarations", "p", 1.0, 1e-6, by="fg")
    checked = ledger.charge("job-1", "declarations", "p", _pure(0.6), dry_run=True)
    assert checked.id == 0 and checked.epsilon == pytest.approx(0.6)
    assert ledger.charges() == [] and ledger.remaining("declarations", "p") == pytest.approx(1.0)
    with pytest.raises(BudgetExceeded):
        ledger.charge("job-2", "declarations", "p", _pure(1.5), dry_run=True)
    ledger.charge("job-1", "declarations", "p", _pure(0.6))
    assert ledger.remaining("declarations", "p") == pytest.approx(0.4)


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite"
    first = Ledger(path, "fiod")
    first.set_budget("investigations", "p", 3.0, 1e-6, by="fg")
    charge = first.charge("j1", "investigations", "p", _pure(1.0))
    reopened = Ledger(path, "fiod")
    assert reopened.remaining("investigations", "p") == pytest.approx(2.0)
    assert reopened.charge("j1", "investigations", "p", _pure(1.0)) == charge
    assert len(reopened.history()) == 2


def test_default_budget_and_required_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, "kmar", require_budget=False)
    status = ledger.status("crossings", "p")
    assert (status.total_epsilon, status.delta, status.is_default) == (10.0, 1e-6, True)
    ledger.charge("j", "crossings", "p", _pure(2.0))
    assert ledger.remaining("crossings", "p") == pytest.approx(8.0)

    strict = Ledger(path, "kmar")  # the safe default: no budget without a grant
    with pytest.raises(BudgetMissing) as err:
        strict.charge("k", "crossings", "other", _pure(0.1))
    assert err.value.rule == "budget_not_granted" and err.value.node == "kmar"
    assert "crossings" in str(err.value) and "other" in str(err.value)
    assert strict.charges(project="other") == []


def test_spending_over_time_composes_as_status(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "politie")
    ledger.set_budget("incidents", "p", 3.0, 1e-6, by="fg")
    ledger.set_budget("incidents", "other", 3.0, 1e-6, by="fg")
    ledger.charge("a", "incidents", "p", _pure(0.5))
    ledger.charge("b", "incidents", "p", Cost(epsilon=0.0, rho=0.01))
    ledger.charge("c", "incidents", "other", _pure(1.0))
    points = ledger.spending("incidents", "p", 1e-6)
    assert [round(spent, 9) for _, spent in points][0] == 0.5 and len(points) == 2
    assert points[-1][1] == pytest.approx(ledger.status("incidents", "p").spent_epsilon)
    assert points[0][0] <= points[1][0]


def test_gaussian_charges_compose_in_rho(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "politie")
    ledger.set_budget("incidents", "p", 3.0, 1e-6, by="fg")
    ledger.set_budget("incidents", "pure-only", 3.0, 0.0, by="fg")
    for i in range(4):
        ledger.charge(f"g{i}", "incidents", "p", Cost(epsilon=0.0, rho=0.01))
    assert ledger.status("incidents", "p").spent_epsilon == pytest.approx(epsilon_at_delta(0.04, 1e-6))
    with pytest.raises(BudgetExceeded) as err:
        ledger.charge("g-big", "incidents", "p", Cost(epsilon=0.0, rho=1.0))
    assert err.value.remaining == pytest.approx(3.0 - epsilon_at_delta(0.04, 1e-6))
    # zCDP never gives pure DP: a budget at delta 0 takes only Laplace releases.
    with pytest.raises(BudgetExceeded) as err:
        ledger.charge("g-zero", "incidents", "pure-only", Cost(epsilon=0.0, rho=0.001))
    assert math.isinf(err.value.requested)
    ledger.charge("l", "incidents", "pure-only", _pure(3.0))


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda led: led.set_budget("d", "p", -1.0, 1e-6, by="x"), "budget_value"),
        (lambda led: led.set_budget("d", "p", 1.0, 1.0, by="x"), "budget_value"),
        (lambda led: led.set_budget("", "p", 1.0, 1e-6, by="x"), "dataset_name"),
        (lambda led: led.charge("", "d", "p", Cost(0.1, 0.005)), "job_id_name"),
        (lambda led: led.charge("j", "d", "p", 0.1), "cost_value"),
        (lambda led: led.set_cap("d", math.nan, 1e-6, by="x"), "budget_value"),
        (lambda led: led.set_cap("", 1.0, 1e-6, by="x"), "dataset_name"),
    ],
)
def test_bad_input_is_refused_with_a_rule(tmp_path: Path, call, rule: str) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(LedgerError) as err:
        call(ledger)
    assert err.value.rule == rule


def test_forty_threads_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, "douane").set_budget("declarations", "race", 10.0, 1e-6, by="fg")
    start = threading.Barrier(40)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        ledger = Ledger(path, "douane")
        start.wait()
        try:
            ledger.charge(f"t{i}", "declarations", "race", _pure(1.0))
            result = "ok"
        except BudgetExceeded:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 30
    ledger = Ledger(path)
    assert len(ledger.charges(project="race")) == 10
    assert ledger.status("declarations", "race").spent_epsilon <= 10.0 + 1e-9


def _process_worker(path: str, proc: int, start, results) -> None:
    ledger = Ledger(path, "douane")
    start.wait()
    ok = 0
    for i in range(10):
        try:
            ledger.charge(f"p{proc}-{i}", "declarations", "race", _pure(0.5))
            ok += 1
        except BudgetExceeded:
            pass
    results.put(ok)


def test_four_processes_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, "douane").set_budget("declarations", "race", 7.0, 1e-6, by="fg")
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(path), p, start, results)) for p in range(4)]
    for p in procs:
        p.start()
    start.set()
    succeeded = sum(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert succeeded == 14  # 14 * 0.5 = 7.0
    ledger = Ledger(path)
    assert len(ledger.charges(project="race")) == 14
    assert ledger.status("declarations", "race").spent_epsilon <= 7.0 + 1e-9


# ---------------------------------------------------------------------- dataset cap over all projects


def test_invented_projects_stop_at_the_dataset_cap(tmp_path: Path) -> None:
    """Four projects with a default budget of 10 each spend 10 on the dataset together, not 40."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "douane", require_budget=False, cap_epsilon=10.0)
    spent = 0.0
    refusals: list[str] = []
    for name in ("a", "b", "c", "d"):
        for i in range(4):
            try:
                ledger.charge(f"{name}-{i}", "declarations", name, _pure(1.0))
                spent += 1.0
            except LedgerError as exc:
                refusals.append(exc.rule)
    assert spent == 10.0 and set(refusals) == {"dataset_budget"}
    cap = ledger.cap("declarations")
    assert (cap.total_epsilon, cap.spent_epsilon, cap.remaining_epsilon) == (10.0, 10.0, 0.0)
    assert (cap.charges, cap.projects, cap.is_default) == (10, 3, True)
    # Another dataset has its own cap.
    ledger.charge("other", "signals", "a", _pure(1.0))


def test_cap_refusal_names_the_rule_and_node_not_other_projects_spending(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "fiod")
    ledger.set_budget("investigations", "mine", 5.0, 1e-6, by="fg")
    ledger.set_budget("investigations", "theirs", 5.0, 1e-6, by="fg")
    ledger.set_cap("investigations", 4.0, 1e-6, by="fg")
    ledger.charge("t1", "investigations", "theirs", _pure(3.25))
    with pytest.raises(DatasetBudgetExceeded) as err:
        ledger.charge("m1", "investigations", "mine", _pure(1.0))
    assert err.value.rule == "dataset_budget" and err.value.node == "fiod"
    assert "3.25" not in str(err.value) and "0.75" not in str(err.value) and "theirs" not in str(err.value)
    # Nothing was charged for the refused job; a job that fits the remainder passes.
    assert ledger.status("investigations", "mine").charges == 0
    ledger.charge("m2", "investigations", "mine", _pure(0.75))
    # A dry run checks the cap too, and records nothing.
    with pytest.raises(DatasetBudgetExceeded):
        ledger.charge("m3", "investigations", "mine", _pure(0.5), dry_run=True)
    assert ledger.cap("investigations").charges == 2


def test_project_budget_and_cap_each_bound_a_charge(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "om")
    ledger.set_cap("cases", 20.0, 1e-6, by="fg")
    ledger.set_budget("cases", "p", 2.0, 1e-6, by="fg")
    ledger.charge("a", "cases", "p", _pure(2.0))
    with pytest.raises(BudgetExceeded) as err:  # the project budget binds first
        ledger.charge("b", "cases", "p", _pure(1.0))
    assert err.value.rule == "budget"
    ledger.set_cap("cases", 2.5, 1e-6, by="fg")
    ledger.set_budget("cases", "q", 5.0, 1e-6, by="fg")
    with pytest.raises(DatasetBudgetExceeded):
        ledger.charge("c", "cases", "q", _pure(1.0))
    ledger.charge("d", "cases", "q", _pure(0.5))
    kinds = [(h.kind, h.project, h.epsilon) for h in ledger.history(dataset="cases")]
    assert kinds[0] == ("cap", "", 20.0) and ("cap", "", 2.5) in kinds
    assert all(h.kind != "cap" for h in ledger.history(project="q"))


def test_cap_composes_gaussian_charges_in_rho(tmp_path: Path) -> None:
    """Across projects the cap adds rhos as a project budget does: zCDP composition, not epsilons."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "politie", require_budget=False, default_epsilon=100.0)
    ledger.set_cap("incidents", 3.0, 1e-6, by="fg")
    for i in range(8):
        ledger.charge(f"g{i}", "incidents", f"p{i}", Cost(epsilon=0.0, rho=0.01))
    cap = ledger.cap("incidents")
    assert cap.spent_epsilon == pytest.approx(epsilon_at_delta(0.08, 1e-6))
    assert cap.spent_rho == pytest.approx(0.08)
    with pytest.raises(DatasetBudgetExceeded) as err:
        ledger.charge("big", "incidents", "p9", Cost(epsilon=0.0, rho=1.0))
    # The refusal states the job's own epsilon, which does not depend on other projects' charges.
    assert err.value.requested == pytest.approx(epsilon_at_delta(1.0, 1e-6), rel=1e-6)
    # A cap at delta 0 takes only Laplace releases.
    ledger.set_cap("incidents", 50.0, 0.0, by="fg")
    with pytest.raises(DatasetBudgetExceeded):
        ledger.charge("g-zero", "incidents", "p0", Cost(epsilon=0.0, rho=0.001))


def test_per_dataset_policies(tmp_path: Path) -> None:
    policies = {
        "open": BudgetPolicy(require_budget=False, project_epsilon=2.0, cap_epsilon=3.0, delta=1e-7),
        "strict": BudgetPolicy(),
    }
    ledger = Ledger(tmp_path / "ledger.sqlite", "kmar", require_budget=False, policies=policies)
    assert ledger.status("open", "x").total_epsilon == 2.0 and ledger.cap("open").delta == 1e-7
    with pytest.raises(BudgetMissing):
        ledger.charge("s", "strict", "x", _pure(0.1))
    ledger.charge("u", "unlisted", "x", _pure(0.1))  # the node-wide default: no grant needed here
    assert [c.dataset for c in ledger.caps()] == ["open", "strict", "unlisted"]
    # An officer's cap overrides the policy's.
    ledger.set_cap("open", 1.0, 1e-6, by="fg")
    assert (ledger.cap("open").total_epsilon, ledger.cap("open").is_default) == (1.0, False)


def _cap_worker(path: str, proc: int, start, results) -> None:
    ledger = Ledger(path, "douane")
    start.wait()
    ok = 0
    for i in range(10):
        try:
            ledger.charge(f"p{proc}-{i}", "declarations", f"project-{proc % 2}", _pure(0.5))
            ok += 1
        except (BudgetExceeded, DatasetBudgetExceeded):
            pass
    results.put(ok)


def test_processes_on_two_projects_never_exceed_the_cap(tmp_path: Path) -> None:
    """Four processes charge two projects at once; each project could take 5, the cap takes 6."""
    path = tmp_path / "ledger.sqlite"
    setup = Ledger(path, "douane")
    for project in ("project-0", "project-1"):
        setup.set_budget("declarations", project, 5.0, 1e-6, by="fg")
    setup.set_cap("declarations", 6.0, 1e-6, by="fg")
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_cap_worker, args=(str(path), p, start, results)) for p in range(4)]
    for p in procs:
        p.start()
    start.set()
    succeeded = sum(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert succeeded == 12  # 12 * 0.5 = 6.0
    cap = setup.cap("declarations")
    assert cap.charges == 12 and cap.spent_epsilon <= 6.0 + 1e-9
    assert all(setup.status("declarations", p).spent_epsilon <= 5.0 for p in ("project-0", "project-1"))


def test_delta_is_the_budgets_delta_as_status_gives_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "douane", require_budget=False, default_delta=1e-6)
    ledger.set_budget("declarations", "mit-2024", 5.0, 1e-7, by="officer-b")
    ledger.charge("job-1", "declarations", "mit-2024", _pure(0.5))
    for project in ("mit-2024", "unset"):
        assert ledger.delta("declarations", project) == ledger.status("declarations", project).delta
    assert ledger.delta("declarations", "mit-2024") == 1e-7 and ledger.delta("declarations", "unset") == 1e-6
    strict = Ledger(tmp_path / "strict.sqlite", "douane")
    with pytest.raises(BudgetMissing):
        strict.delta("declarations", "unset")  # no budget, no delta: refused as status refuses
