"""Privacy-budget ledger of one node: budgets per (dataset, project), a cap per dataset, every charge.

A budget is a total privacy loss (epsilon at the officer's delta) for all releases ever made from
one dataset for one project. A dataset's cap bounds the same loss summed over all its projects, so
inventing project names cannot multiply what a dataset releases. Charges compose sequentially:
pure-DP epsilons add, zCDP rhos add (Dwork & Roth 2014, Thm. 3.16; Bun & Steinke 2016, Lemma
2.3), and the spent epsilon at a budget's delta is the smaller of the two bounds in
``privacy.accounting.spent_epsilon``; the cap composes the same way over every project's charges.

Without an officer's grant a project has no budget at all (``BudgetMissing``) unless the policy
of its dataset says otherwise (``BudgetPolicy.require_budget = False``: a default budget per
project, still bounded by the cap).

A charge is atomic (``BEGIN IMMEDIATE``: check the project budget and the dataset cap, insert,
commit) and idempotent per job id, so a crashed and retried job never spends twice and parallel
charges never overspend either bound. Every call opens its own connection, in WAL mode with a
busy timeout, so threads and processes may share one ledger file.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from privacy import store
from privacy.accounting import Cost, PrivacyError, epsilon_at_delta, spent_epsilon

__all__ = [
    "BudgetExceeded",
    "BudgetMissing",
    "BudgetPolicy",
    "BudgetStatus",
    "CapStatus",
    "Charge",
    "DatasetBudgetExceeded",
    "HistoryEntry",
    "Ledger",
    "LedgerError",
]

DEFAULT_EPSILON = 10.0
DEFAULT_DELTA = 1e-6
# Float sums in SQL depend on row order; a charge that fits up to this slack is accepted.
_SLACK = 1e-9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    dataset TEXT NOT NULL,
    project TEXT NOT NULL,
    total_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL,
    PRIMARY KEY (dataset, project)
);
CREATE TABLE IF NOT EXISTS budget_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    project TEXT NOT NULL,
    total_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    previous_epsilon REAL,
    previous_delta REAL,
    set_by TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    dataset TEXT NOT NULL,
    project TEXT NOT NULL,
    cost_epsilon REAL NOT NULL,
    cost_rho REAL NOT NULL,
    at TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS charges_by_budget ON charges (dataset, project);
CREATE TABLE IF NOT EXISTS dataset_caps (
    dataset TEXT PRIMARY KEY,
    total_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cap_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    total_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    previous_epsilon REAL,
    previous_delta REAL,
    set_by TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


class LedgerError(PrivacyError):
    """A ledger request breaks a rule; ``rule`` names which."""


class BudgetExceeded(LedgerError):
    """A charge would take (dataset, project) past its budget."""

    def __init__(
        self,
        node: str,
        dataset: str,
        project: str,
        requested: float,
        remaining: float,
        total: float,
        delta: float,
    ) -> None:
        self.dataset = dataset
        self.project = project
        self.requested = requested
        self.remaining = remaining
        message = (
            f"privacy budget of dataset '{dataset}' for project '{project}' is exhausted: the job asks "
            f"epsilon {requested:.4g}, only {max(remaining, 0.0):.4g} remains of {total:.4g} (delta {delta:g})"
        )
        super().__init__("budget", message, node)


class DatasetBudgetExceeded(LedgerError):
    """A charge would take a dataset past its cap over all projects.

    The message names what the job asked, not what other projects spent: an analyst learns only
    that the dataset's total across projects does not cover the job.
    """

    def __init__(self, node: str, dataset: str, project: str, requested: float) -> None:
        self.dataset = dataset
        self.project = project
        self.requested = requested
        message = (
            f"the total privacy budget of dataset '{dataset}' across all projects does not cover this "
            f"job of project '{project}' (it asks epsilon {requested:.4g}); only the node's privacy "
            "officer can raise the dataset's cap"
        )
        super().__init__("dataset_budget", message, node)


class BudgetMissing(LedgerError):
    """No budget was granted to (dataset, project) and the dataset's policy requires a grant."""

    def __init__(self, node: str, dataset: str, project: str) -> None:
        self.dataset = dataset
        self.project = project
        message = (
            f"no privacy budget is granted to project '{project}' on dataset '{dataset}'; the node's "
            f"privacy officer grants one with: federation budget set --dataset {dataset} "
            f"--project {project} --epsilon <total>"
        )
        super().__init__("budget_not_granted", message, node)


@dataclass(frozen=True)
class BudgetPolicy:
    """What a dataset's budgets are before its officer sets any.

    ``require_budget``: a project without a grant has no budget (the safe default); otherwise it
    gets ``project_epsilon``. ``cap_epsilon`` bounds all projects together until the officer sets
    a cap. Both read at ``delta``.
    """

    require_budget: bool = True
    project_epsilon: float = DEFAULT_EPSILON
    cap_epsilon: float = DEFAULT_EPSILON
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        _check_budget(self.project_epsilon, self.delta)
        _check_budget(self.cap_epsilon, self.delta)


@dataclass(frozen=True)
class Charge:
    """One recorded charge. ``epsilon`` is the pure-DP part, ``rho`` the zCDP cost of the release."""

    id: int
    job_id: str
    dataset: str
    project: str
    epsilon: float
    rho: float
    at: str
    note: str

    @property
    def cost(self) -> Cost:
        return Cost(epsilon=self.epsilon, rho=self.rho)


@dataclass(frozen=True)
class BudgetStatus:
    """What a privacy officer sees for one (dataset, project): totals in epsilon at ``delta``."""

    dataset: str
    project: str
    total_epsilon: float
    delta: float
    spent_epsilon: float
    remaining_epsilon: float
    spent_rho: float
    charges: int
    is_default: bool


@dataclass(frozen=True)
class CapStatus:
    """A dataset's cap over all projects, what all of them spent and what remains, for officers."""

    dataset: str
    total_epsilon: float
    delta: float
    spent_epsilon: float
    remaining_epsilon: float
    spent_rho: float
    charges: int
    projects: int
    is_default: bool


@dataclass(frozen=True)
class HistoryEntry:
    """A budget change (``kind == "budget"``), a cap change (``kind == "cap"``, project ``""``)
    or a charge (``kind == "charge"``), oldest first."""

    kind: str
    at: str
    dataset: str
    project: str
    epsilon: float
    delta: float | None
    rho: float | None
    by: str
    note: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or (what != "project" and not value.strip()):
        raise LedgerError(f"{what}_name", f"{what} must be a non-empty string, got {value!r}")
    return value


class Ledger:
    """The budget ledger at ``path``.

    Budgets come from the officer (``set_budget``, ``set_cap``) or else from the dataset's
    ``BudgetPolicy``: ``policies`` by dataset name, and for any other dataset the one made of
    ``default_epsilon``, ``cap_epsilon`` (``default_epsilon`` when not given), ``default_delta``
    and ``require_budget``. ``node_id`` is named in refusals.
    """

    def __init__(
        self,
        path: str | Path,
        node_id: str = "",
        *,
        default_epsilon: float = DEFAULT_EPSILON,
        default_delta: float = DEFAULT_DELTA,
        require_budget: bool = True,
        cap_epsilon: float | None = None,
        policies: Mapping[str, BudgetPolicy] | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.default_policy = BudgetPolicy(
            require_budget=require_budget,
            project_epsilon=default_epsilon,
            cap_epsilon=default_epsilon if cap_epsilon is None else cap_epsilon,
            delta=default_delta,
        )
        self.policies = dict(policies or {})
        self.path = Path(path)
        self.node_id = node_id
        self.busy_timeout_s = busy_timeout_s
        store.create(self.path, _SCHEMA, self.busy_timeout_s)

    def policy(self, dataset: str) -> BudgetPolicy:
        """The budget policy of ``dataset`` (its own, or the node's default)."""
        return self.policies.get(dataset, self.default_policy)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return store.session(self.path, self.busy_timeout_s)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            deadline = time.monotonic() + self.busy_timeout_s
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() > deadline:
                        raise LedgerError(
                            "ledger_busy", f"ledger {self.path} stayed locked too long"
                        ) from None
                    time.sleep(0.01)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ budgets

    def set_budget(self, dataset: str, project: str, epsilon: float, delta: float, by: str) -> None:
        """Set the total budget of (dataset, project) to ``epsilon`` at ``delta``; recorded in history."""
        dataset, project, by = _name(dataset, "dataset"), _name(project, "project"), _name(by, "officer")
        _check_budget(epsilon, delta)
        at = _now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT total_epsilon, delta FROM budgets WHERE dataset = ? AND project = ?",
                (dataset, project),
            ).fetchone()
            conn.execute(
                "INSERT INTO budgets (dataset, project, total_epsilon, delta, set_by, set_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (dataset, project) DO UPDATE SET total_epsilon = excluded.total_epsilon,"
                " delta = excluded.delta, set_by = excluded.set_by, set_at = excluded.set_at",
                (dataset, project, float(epsilon), float(delta), by, at),
            )
            conn.execute(
                "INSERT INTO budget_changes (dataset, project, total_epsilon, delta, previous_epsilon,"
                " previous_delta, set_by, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    project,
                    float(epsilon),
                    float(delta),
                    row[0] if row else None,
                    row[1] if row else None,
                    by,
                    at,
                ),
            )

    def set_cap(self, dataset: str, epsilon: float, delta: float, by: str) -> None:
        """Set the cap of ``dataset`` over all its projects to ``epsilon`` at ``delta``; recorded in history."""
        dataset, by = _name(dataset, "dataset"), _name(by, "officer")
        _check_budget(epsilon, delta)
        at = _now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT total_epsilon, delta FROM dataset_caps WHERE dataset = ?", (dataset,)
            ).fetchone()
            conn.execute(
                "INSERT INTO dataset_caps (dataset, total_epsilon, delta, set_by, set_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (dataset) DO UPDATE SET total_epsilon = excluded.total_epsilon,"
                " delta = excluded.delta, set_by = excluded.set_by, set_at = excluded.set_at",
                (dataset, float(epsilon), float(delta), by, at),
            )
            conn.execute(
                "INSERT INTO cap_changes (dataset, total_epsilon, delta, previous_epsilon, previous_delta,"
                " set_by, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    float(epsilon),
                    float(delta),
                    row[0] if row else None,
                    row[1] if row else None,
                    by,
                    at,
                ),
            )

    def _budget(self, conn: sqlite3.Connection, dataset: str, project: str) -> tuple[float, float, bool]:
        row = conn.execute(
            "SELECT total_epsilon, delta FROM budgets WHERE dataset = ? AND project = ?", (dataset, project)
        ).fetchone()
        if row is not None:
            return float(row[0]), float(row[1]), False
        policy = self.policy(dataset)
        if policy.require_budget:
            raise BudgetMissing(self.node_id, dataset, project)
        return policy.project_epsilon, policy.delta, True

    def _cap(self, conn: sqlite3.Connection, dataset: str) -> tuple[float, float, bool]:
        row = conn.execute(
            "SELECT total_epsilon, delta FROM dataset_caps WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is not None:
            return float(row[0]), float(row[1]), False
        policy = self.policy(dataset)
        return policy.cap_epsilon, policy.delta, True

    @staticmethod
    def _sums(conn: sqlite3.Connection, dataset: str, project: str | None) -> tuple[float, float, float, int]:
        """Pure epsilon, all rho, Gaussian rho and count of the charges on (dataset, project), or on
        every project of ``dataset`` when ``project`` is None."""
        where, args = (
            ("dataset = ?", (dataset,))
            if project is None
            else (
                "dataset = ? AND project = ?",
                (dataset, project),
            )
        )
        row = conn.execute(
            "SELECT COALESCE(SUM(cost_epsilon), 0), COALESCE(SUM(cost_rho), 0),"
            " COALESCE(SUM(CASE WHEN cost_epsilon = 0 THEN cost_rho ELSE 0 END), 0), COUNT(*)"
            f" FROM charges WHERE {where}",
            args,
        ).fetchone()
        return float(row[0]), float(row[1]), float(row[2]), int(row[3])

    def _cap_status(self, conn: sqlite3.Connection, dataset: str) -> CapStatus:
        total, delta, is_default = self._cap(conn, dataset)
        pure, rho_all, rho_gauss, n = self._sums(conn, dataset, None)
        spent = spent_epsilon(pure, rho_all, rho_gauss, delta)
        projects = conn.execute(
            "SELECT COUNT(DISTINCT project) FROM charges WHERE dataset = ?", (dataset,)
        ).fetchone()[0]
        return CapStatus(
            dataset, total, delta, spent, max(total - spent, 0.0), rho_all, n, int(projects), is_default
        )

    def _status(self, conn: sqlite3.Connection, dataset: str, project: str) -> BudgetStatus:
        total, delta, is_default = self._budget(conn, dataset, project)
        pure, rho_all, rho_gauss, n = self._sums(conn, dataset, project)
        spent = spent_epsilon(pure, rho_all, rho_gauss, delta)
        return BudgetStatus(
            dataset, project, total, delta, spent, max(total - spent, 0.0), rho_all, n, is_default
        )

    def delta(self, dataset: str, project: str) -> float:
        """The delta of (dataset, project)'s budget, as ``status`` gives it, without composing what
        was spent (an OpenDP conversion): what a release reports its epsilon at."""
        dataset, project = _name(dataset, "dataset"), _name(project, "project")
        with self._connect() as conn:
            return self._budget(conn, dataset, project)[1]

    def remaining(self, dataset: str, project: str) -> float:
        """Epsilon (at the budget's delta) still available to (dataset, project)."""
        dataset, project = _name(dataset, "dataset"), _name(project, "project")
        with self._connect() as conn:
            return self._status(conn, dataset, project).remaining_epsilon

    def status(self, dataset: str, project: str) -> BudgetStatus:
        """Budget, spending and remainder of one (dataset, project)."""
        dataset, project = _name(dataset, "dataset"), _name(project, "project")
        with self._connect() as conn:
            return self._status(conn, dataset, project)

    def show(self, project: str | None = None) -> list[BudgetStatus]:
        """Every (dataset, project) with a budget row or a charge, optionally for one project."""
        with self._connect() as conn:
            pairs = conn.execute(
                "SELECT dataset, project FROM budgets UNION SELECT dataset, project FROM charges ORDER BY 1, 2"
            ).fetchall()
            out = []
            for dataset, proj in pairs:
                if project is not None and proj != project:
                    continue
                try:
                    out.append(self._status(conn, dataset, proj))
                except BudgetMissing:
                    out.append(BudgetStatus(dataset, proj, 0.0, 0.0, math.inf, 0.0, 0.0, 0, True))
            return out

    def cap(self, dataset: str) -> CapStatus:
        """The cap of one dataset over all projects, what they spent together and what remains."""
        dataset = _name(dataset, "dataset")
        with self._connect() as conn:
            return self._cap_status(conn, dataset)

    def caps(self) -> list[CapStatus]:
        """The cap of every dataset with a policy, an officer's cap or a charge."""
        with self._connect() as conn:
            names = {
                r[0]
                for r in conn.execute("SELECT dataset FROM dataset_caps UNION SELECT dataset FROM charges")
            }
            return [self._cap_status(conn, name) for name in sorted(names | set(self.policies))]

    def history(self, dataset: str | None = None, project: str | None = None) -> list[HistoryEntry]:
        """Budget changes and charges, oldest first, optionally for one dataset and/or project."""
        where, args = [], []
        if dataset is not None:
            where.append("dataset = ?")
            args.append(dataset)
        if project is not None:
            where.append("project = ?")
            args.append(project)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        with self._connect() as conn:
            budgets = conn.execute(
                f"SELECT at, id, dataset, project, total_epsilon, delta, set_by FROM budget_changes{cond}",
                args,
            ).fetchall()
            charges = conn.execute(
                f"SELECT at, id, dataset, project, cost_epsilon, cost_rho, job_id, note FROM charges{cond}",
                args,
            ).fetchall()
            caps = []
            if project is None:
                cap_cond, cap_args = ("WHERE dataset = ?", [dataset]) if dataset is not None else ("", [])
                caps = conn.execute(
                    f"SELECT at, id, dataset, total_epsilon, delta, set_by FROM cap_changes {cap_cond}",
                    cap_args,
                ).fetchall()
        entries = [
            (r[0], 0, r[1], HistoryEntry("budget", r[0], r[2], r[3], r[4], r[5], None, r[6], ""))
            for r in budgets
        ]
        entries += [
            (r[0], 0, r[1], HistoryEntry("cap", r[0], r[2], "", r[3], r[4], None, r[5], "")) for r in caps
        ]
        entries += [
            (r[0], 1, r[1], HistoryEntry("charge", r[0], r[2], r[3], r[4], None, r[5], r[6], r[7]))
            for r in charges
        ]
        return [e[3] for e in sorted(entries, key=lambda e: e[:3])]

    # ------------------------------------------------------------------ charges

    def charge(
        self, job_id: str, dataset: str, project: str, cost: Cost, note: str = "", dry_run: bool = False
    ) -> Charge:
        """Record ``cost`` for ``job_id`` if it fits the budget of (dataset, project), atomically.

        Charging a job id that is already recorded returns the recorded charge and spends nothing;
        the same job id with a different dataset, project or cost is refused (rule ``job_id_reused``).
        With ``dry_run`` every check runs and nothing is recorded: a job whose parties must all
        agree first asks each one, then charges (the returned charge has id 0).
        """
        job_id, dataset, project = (
            _name(job_id, "job_id"),
            _name(dataset, "dataset"),
            _name(project, "project"),
        )
        if not isinstance(cost, Cost):
            raise LedgerError("cost_value", f"cost must be a Cost, got {type(cost).__name__}")
        with self._write() as conn:
            existing = conn.execute(
                "SELECT id, job_id, dataset, project, cost_epsilon, cost_rho, at, note FROM charges WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if existing is not None:
                found = Charge(*existing)
                same = (found.dataset, found.project) == (dataset, project) and all(
                    math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                    for a, b in ((found.epsilon, cost.epsilon), (found.rho, cost.rho))
                )
                if not same:
                    raise LedgerError(
                        "job_id_reused",
                        f"job '{job_id}' was already charged for dataset '{found.dataset}', project "
                        f"'{found.project}' with a different cost",
                        self.node_id,
                    )
                return found
            # Both bounds are read and checked inside this one write transaction: no other charge
            # can land between the check and the insert, on this project or any other.
            total, delta, _ = self._budget(conn, dataset, project)
            before, after = _spent_with(self._sums(conn, dataset, project), cost, delta)
            if after > total * (1 + _SLACK) + _SLACK:
                requested = after - before if math.isfinite(after) else _alone(cost, delta)
                raise BudgetExceeded(self.node_id, dataset, project, requested, total - before, total, delta)
            cap_total, cap_delta, _ = self._cap(conn, dataset)
            _, cap_after = _spent_with(self._sums(conn, dataset, None), cost, cap_delta)
            if cap_after > cap_total * (1 + _SLACK) + _SLACK:
                # The job's own epsilon, not its share of the composed total: that would depend on
                # what other projects spent.
                raise DatasetBudgetExceeded(self.node_id, dataset, project, _alone(cost, cap_delta))
            at = _now()
            if dry_run:
                return Charge(0, job_id, dataset, project, cost.epsilon, cost.rho, at, note)
            cur = conn.execute(
                "INSERT INTO charges (job_id, dataset, project, cost_epsilon, cost_rho, at, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, dataset, project, float(cost.epsilon), float(cost.rho), at, note),
            )
            return Charge(int(cur.lastrowid or 0), job_id, dataset, project, cost.epsilon, cost.rho, at, note)

    def spending(self, dataset: str, project: str, delta: float) -> list[tuple[str, float]]:
        """(time, epsilon spent so far at ``delta``) after each charge on (dataset, project), oldest
        first: the officer's chart of spending over time, composed as ``status`` composes it."""
        pure = rho_all = rho_gauss = 0.0
        out = []
        for charge in self.charges(dataset, project):
            pure, rho_all = pure + charge.epsilon, rho_all + charge.rho
            rho_gauss += charge.rho if charge.epsilon == 0 else 0.0
            out.append((charge.at, spent_epsilon(pure, rho_all, rho_gauss, delta)))
        return out

    def charges(self, dataset: str | None = None, project: str | None = None) -> list[Charge]:
        """Recorded charges, oldest first, optionally for one dataset and/or project."""
        sql = "SELECT id, job_id, dataset, project, cost_epsilon, cost_rho, at, note FROM charges"
        where, args = [], []
        for column, value in (("dataset", dataset), ("project", project)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            return [Charge(*row) for row in conn.execute(sql + " ORDER BY id", args).fetchall()]


def _spent_with(sums: tuple[float, float, float, int], cost: Cost, delta: float) -> tuple[float, float]:
    """Epsilon spent at ``delta`` by the charges summed in ``sums``, before and after adding ``cost``."""
    pure, rho_all, rho_gauss, _ = sums
    before = spent_epsilon(pure, rho_all, rho_gauss, delta)
    after = spent_epsilon(
        pure + cost.epsilon, rho_all + cost.rho, rho_gauss + (0.0 if cost.pure else cost.rho), delta
    )
    return before, after


def _alone(cost: Cost, delta: float) -> float:
    """Epsilon of one release on its own at ``delta`` (inf for zCDP at delta 0)."""
    return cost.epsilon if cost.pure else epsilon_at_delta(cost.rho, delta)


def _check_budget(epsilon: float, delta: float) -> None:
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, int | float)
        or not math.isfinite(epsilon)
        or epsilon < 0
    ):
        raise LedgerError("budget_value", f"budget epsilon must be a finite number >= 0, got {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta < 1:
        raise LedgerError("budget_value", f"budget delta must be in [0, 1), got {delta!r}")
