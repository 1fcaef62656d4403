"""The error the scenario generator raises on bad input."""

from __future__ import annotations

from protocols.errors import FederationError


class ScenarioError(FederationError, ValueError):
    """Bad input to the scenario generator; ``rule`` names the rule that was broken."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(rule, message)
