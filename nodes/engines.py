"""Query engines beyond the embedded DuckDB and PostgreSQL, by source kind, imported when used.

An engine runs the SQL a node wrote itself (``nodes.sqlgen``) against datasets that live
elsewhere, such as a Spark cluster. The module behind a kind is imported only when a node's
config uses that kind, so a node without such a source never loads its client library.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from nodes.config import Dataset, NodeConfig
from nodes.sqlgen import Dialect

# Source kind -> "module:class" of its engine.
ENGINES: dict[str, str] = {"spark": "nodes.spark_source:SparkEngine"}


class Engine(Protocol):
    dialect: Dialect

    def load(self, dataset: Dataset) -> None:
        """Make ``dataset`` queryable (register files as a view); a ``FederationError`` if it cannot."""

    def columns(self, dataset: Dataset) -> set[str]:
        """The local column names the dataset's table has."""

    def fetch(self, dataset: Dataset, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of node-written ``sql`` with ``params`` bound; a failure names the dataset only."""

    def ping(self) -> None:
        """Raise when the engine does not answer."""

    def close(self) -> None: ...


def open_engine(kind: str, config: NodeConfig) -> Engine:
    """A new engine for the ``kind`` sources of ``config``'s node."""
    module, _, name = ENGINES[kind].partition(":")
    engine: Engine = getattr(importlib.import_module(module), name)(config)
    return engine
