"""The one exception secure aggregation raises for bad input, bad peers or too many dropouts."""

from __future__ import annotations


class SecAggError(Exception):
    """A secure-aggregation rule was broken; ``rule`` names it for refusals and audit logs."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message
