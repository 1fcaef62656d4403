"""Datasets on a Spark cluster: the node's own SQL, rendered for Spark SQL, run through pyspark.

The node never sends analyst text: it writes SQL from the checked plan (``nodes.sqlgen``, the
``SPARK`` dialect), binds every parameter as a literal (``nodes.spark_sql``) and runs it with
``spark.sql``. Only per-group aggregates (and, for overlap jobs, the identifiers the node blinds
itself) come back to the node. The session is a local one (``local[N]``, tests and one machine),
a standalone master (``spark://``) or Spark Connect (``sc://``); one per node process.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from nodes.config import Dataset, NodeConfig, Source
from nodes.spark_sql import RenderError, spark_sql
from nodes.sqlgen import SPARK, table_name
from protocols.errors import FederationError

log = logging.getLogger("federation.node")

# A local session is for tests and a single machine: small, quiet and without a web UI. Operator
# settings (``conf``) win over these.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "512m",
    "spark.sql.session.timeZone": "UTC",
}


class SparkSourceError(FederationError):
    """A Spark source cannot be read; the message names the dataset, never the SQL or the data."""


def connect_url(source: Source) -> str:
    """The Spark Connect url with the token from the operator's environment variable, if any."""
    if not source.token_env:
        return source.url
    token = os.environ.get(source.token_env, "")
    if not token:
        raise SparkSourceError(
            "source_unavailable", f"environment variable {source.token_env} (Spark Connect token) is not set"
        )
    sep = ";" if ";" in source.url else ("" if source.url.endswith("/") else "/") + ";"
    return f"{source.url}{sep}token={token}"


class SparkEngine:
    """The node's Spark session and the views it registers for ``path`` sources."""

    dialect = SPARK

    def __init__(self, config: NodeConfig) -> None:
        self.node = config.node_id
        self._lock = threading.Lock()
        self._session: Any = None

    def _error(self, dataset: Dataset, what: str, exc: BaseException) -> SparkSourceError:
        # Spark's messages quote the SQL and name local tables and columns: the class name only.
        return SparkSourceError(
            "source_unavailable", f"dataset {dataset.name}: {what} ({type(exc).__name__})", node=self.node
        )

    def session(self, source: Source) -> Any:
        with self._lock:
            if self._session is None:
                from pyspark.sql import SparkSession

                builder = SparkSession.builder.appName(f"federation-node-{self.node}")
                if source.url.startswith("sc://"):
                    builder = builder.remote(connect_url(source))
                    settings = dict(source.conf)
                else:
                    builder = builder.master(source.url)
                    local = source.url.startswith("local")
                    settings = {**(LOCAL_DEFAULTS if local else {}), **dict(source.conf)}
                for key, value in settings.items():
                    builder = builder.config(key, value)
                self._session = builder.getOrCreate()
                # Spark substitutes ${...} even inside string literals: a bound value such as
                # '${spark.app.name}' would stop being itself. Set per session, after the
                # operator's conf, so no setting turns it back on.
                self._session.conf.set("spark.sql.variable.substitute", "false")
                if not source.url.startswith("sc://"):
                    self._session.sparkContext.setLogLevel("ERROR")
            return self._session

    def load(self, dataset: Dataset) -> None:
        src = dataset.source
        try:
            session = self.session(src)
            if src.location:
                # Files on the cluster's storage, read in place under the node's own view name.
                frame = session.read.format(src.format or "parquet").load(src.location)
                frame.createOrReplaceTempView(table_name(dataset))
        except FederationError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyspark raises many kinds; all mean unreadable
            raise self._error(dataset, "cannot open the Spark source", exc) from None

    def columns(self, dataset: Dataset) -> set[str]:
        try:
            sql = spark_sql(f"SELECT * FROM {SPARK.table(dataset)} LIMIT 0", [])
            return set(self.session(dataset.source).sql(sql).columns)
        except FederationError:
            raise
        except Exception as exc:  # noqa: BLE001 - see load
            raise self._error(dataset, "cannot read the Spark table", exc) from None

    def fetch(self, dataset: Dataset, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            text = spark_sql(sql, params)
        except RenderError as exc:
            raise SparkSourceError(
                "source_unavailable", f"dataset {dataset.name}: {exc}", node=self.node
            ) from None
        try:
            rows = self.session(dataset.source).sql(text).collect()
        except FederationError:
            raise
        except Exception as exc:  # noqa: BLE001 - see load
            raise self._error(dataset, "Spark query failed", exc) from None
        # Binary values (row digests) come back as bytearray; the node keys them as bytes, as DuckDB's.
        return [tuple(bytes(v) if isinstance(v, bytearray) else v for v in row) for row in rows]

    def ping(self) -> None:
        with self._lock:
            session = self._session
        if session is not None:
            session.sql("SELECT 1").collect()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.stop()
