"""The one exception secure aggregation raises for bad input, bad peers or too many dropouts."""

from __future__ import annotations

from protocols.errors import FederationError


class SecAggError(FederationError):
    """A secure-aggregation rule was broken; ``rule`` names it for refusals and audit logs."""

    def __init__(self, rule: str, message: str, node: str = "") -> None:
        super().__init__(rule, message, node)
