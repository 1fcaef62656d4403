"""Refusals that depend on the data, and the one failure an analyst sees in their place.

A refusal decided on the data is a release too (DESIGN.md, principle 6): it is charged, or made
uninformative. Nodes still name the rule that fired to the coordinator and in their own audit
log; the coordinator never passes such a rule, or which party it fired at, on to the analyst.
Refusals that depend only on the policy, the request or the budget (an unknown dataset, a
purpose, an identifier that may not be used, a spent budget) keep their rule and node.
See docs/security.md, "Data-dependent refusals".
"""

from __future__ import annotations

from protocols import federation_pb2 as pb
from protocols.errors import FederationError

__all__ = ["DATA_DEPENDENT", "NOT_COMPUTED", "OVERLAP_NOT_COMPUTED", "ChargedRefusal", "is_data_dependent"]

# The rule of the one undifferentiated failure.
NOT_COMPUTED = "not_computed"
OVERLAP_NOT_COMPUTED = "the overlap could not be computed under the parties' policies"

# Rules a node decides on its data (for overlap: on a noisy set size under DP, charged first).
DATA_DEPENDENT = frozenset({"set_too_small", "set_too_large"})


def is_data_dependent(rule: str) -> bool:
    """Whether a refusal with ``rule`` says something about a party's data."""
    return rule in DATA_DEPENDENT


class ChargedRefusal(FederationError):
    """A refusal decided on the data after its decision was charged; ``charged`` says what it cost,
    and the node's refusal carries it (``Refusal.cost``) so the analyst is told."""

    def __init__(self, rule: str, message: str, node: str, charged: pb.NodeCost) -> None:
        super().__init__(rule, message, node)
        self.charged = charged
