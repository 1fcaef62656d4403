"""Federated analytics for partner organisations: aggregates leave a node, raw rows never do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocols.errors import FederationError, QueryError

if TYPE_CHECKING:
    from federation.client import Client

__all__ = ["Client", "FederationError", "QueryError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The SDK (pandas, OpenDP) loads on first use: a node process started through the same package
    # never needs it and would hold it resident for nothing (PEP 562).
    if name == "Client":
        from federation.client import Client

        return Client
    raise AttributeError(f"module 'federation' has no attribute {name!r}")
