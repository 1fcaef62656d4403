"""The "budget" job: a read-only report of a project's budgets over the node's exposed datasets."""

from __future__ import annotations

from nodes.context import NodeContext
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

DEFAULT_PROJECT = "default"


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
