"""Everything a node's job handlers share, built once when the node starts.

The daemon builds one ``NodeContext`` and one ``JobRouter`` over it (nodes/router.py); handlers
receive the context at construction and never have attributes set on them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.approvals import ApprovalStore, approvals_path
from nodes.audit import AuditLog, load_or_create_signing_key
from nodes.config import NodeConfig, Policy
from nodes.differencing import DifferencingGuard
from nodes.keys import load_or_create_secagg_key
from nodes.release_copies import ReleaseCopies
from nodes.sources import DataSources
from privacy.ledger import BudgetPolicy, Ledger


@dataclass(frozen=True)
class NodeContext:
    """The node's configuration and state: sources, audit log, ledger, approvals and keys."""

    config: NodeConfig
    sources: DataSources
    audit: AuditLog
    ledger: Ledger
    approvals: ApprovalStore
    differencing: DifferencingGuard
    secagg_key: Ed25519PrivateKey
    releases: ReleaseCopies

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @classmethod
    def open(cls, config: NodeConfig, signed: bool = True) -> NodeContext:
        """Open the state folder, the sources and every store of ``config``'s node.

        ``signed`` signs audit entries with the node's key (``audit_signing_key``, docs/audit.md); only
        tests that read an unsigned log turn it off.
        """
        state = config.state_dir
        state.mkdir(parents=True, exist_ok=True)
        audit = AuditLog(
            state / "audit.log",
            config.node_id,
            signing_key=load_or_create_signing_key(config.audit_key_path) if signed else None,
        )
        return cls(
            config=config,
            sources=DataSources(config),
            audit=audit,
            ledger=open_ledger(config),
            approvals=ApprovalStore(approvals_path(state), config.node_id, audit),
            differencing=DifferencingGuard(config),
            secagg_key=load_or_create_secagg_key(state),
            releases=ReleaseCopies(state / "releases.sqlite"),
        )

    def close(self) -> None:
        self.sources.close()


def open_ledger(config: NodeConfig) -> Ledger:
    """The node's budget ledger, with each dataset's budget policy (grants required, default, cap)."""
    return Ledger(
        Path(config.state_dir) / "ledger.sqlite",
        node_id=config.node_id,
        default_epsilon=config.policy.budget_epsilon,
        default_delta=config.policy.budget_delta,
        require_budget=config.policy.require_budget,
        cap_epsilon=config.policy.dataset_budget_epsilon,
        policies={name: budget_policy(d.policy) for name, d in config.datasets.items()},
    )


def budget_policy(policy: Policy) -> BudgetPolicy:
    return BudgetPolicy(
        require_budget=policy.require_budget,
        project_epsilon=policy.budget_epsilon,
        cap_epsilon=policy.dataset_budget_epsilon,
        delta=policy.budget_delta,
    )
