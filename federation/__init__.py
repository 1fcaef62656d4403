"""Federated analytics for partner organisations: aggregates leave a node, raw rows never do."""

from federation.client import Client
from protocols.errors import FederationError, QueryError

__all__ = ["Client", "FederationError", "QueryError"]
__version__ = "0.1.0"
