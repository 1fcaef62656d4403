"""Budgets at a node: the officer's changes (CLI and console share them) and the "budget" job, a
read-only report of a project's budgets over the node's exposed datasets."""

from __future__ import annotations

from nodes.config import NodeConfig
from nodes.context import NodeContext
from privacy.ledger import BudgetStatus, CapStatus, Ledger
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

DEFAULT_PROJECT = "default"


def _known(config: NodeConfig, dataset: str) -> None:
    if dataset not in config.datasets:
        raise FederationError("unknown_dataset", f"node {config.node_id} has no dataset '{dataset}'")


def set_budget(
    config: NodeConfig, ledger: Ledger, dataset: str, project: str, epsilon: float, delta: float, by: str
) -> BudgetStatus:
    """Set one dataset's total budget for one project (``federation budget set``, the console)."""
    _known(config, dataset)
    if not project.strip():
        raise FederationError("bad_input", "name the project the budget is for")
    ledger.set_budget(dataset, project.strip(), epsilon, delta, by)
    return ledger.status(dataset, project.strip())


def set_cap(
    config: NodeConfig, ledger: Ledger, dataset: str, epsilon: float, delta: float, by: str
) -> CapStatus:
    """Set one dataset's cap over all its projects (``federation budget cap``, the console)."""
    _known(config, dataset)
    ledger.set_cap(dataset, epsilon, delta, by)
    return ledger.cap(dataset)


class BudgetHandler:
    """Reports budgets; spends nothing and reads no data."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def abandon(self, job: pb.JobRequest) -> None:
        """A budget report holds nothing."""

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        project = job.budget.project or DEFAULT_PROJECT
        report = pb.BudgetReport()
        for name, dataset in sorted(self.ctx.config.datasets.items()):
            if not dataset.exposed:
                continue
            try:
                status = self.ctx.ledger.status(name, project)
            except FederationError:
                continue  # no budget for this project: nothing to report, nothing can be spent
            report.lines.add(
                node=self.ctx.node_id,
                dataset=name,
                project=project,
                total_epsilon=status.total_epsilon,
                spent_epsilon=status.spent_epsilon,
                remaining_epsilon=status.remaining_epsilon,
                delta=status.delta,
                releases=status.charges,
            )
        return pb.JobResponse(job_id=job.job_id, budget=report)
