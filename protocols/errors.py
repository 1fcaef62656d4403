"""Errors that cross the wire: each names the rule that fired and, where known, the node."""

from __future__ import annotations


class FederationError(Exception):
    """A refusal or failure with a machine-readable rule and a one-line reason for people."""

    def __init__(self, rule: str, message: str, node: str = "") -> None:
        super().__init__(message)
        self.rule = rule
        self.node = node
        self.message = message

    def __str__(self) -> str:
        where = f"node {self.node}: " if self.node else ""
        return f"{where}{self.message} [rule: {self.rule}]"


class QueryError(FederationError):
    """The analyst's query cannot be turned into a valid job spec."""


class ConfigError(FederationError):
    """A config file is missing, malformed or inconsistent."""

    def __init__(self, message: str, rule: str = "config") -> None:
        super().__init__(rule, message)
