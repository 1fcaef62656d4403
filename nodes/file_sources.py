"""File sources as versions: CSV and small Parquet converted once into a DuckDB file, large
Parquet queried in place.

A node never holds a file source in memory. Each version of a source is a DuckDB database of its
own, opened with the operator's ``memory_limit``, ``threads`` and a spill folder in the node's
state (DuckDB spills sorts, joins and aggregates past the limit to ``temp_directory``). A version
counted before (its counts file below) opens its database on its first query, so an idle node
holds none (``nodes/prepare.py``):

* **CSV, and Parquet smaller than ``parquet_convert_below``** (node config, default 256MB), are
  converted once into ``<state_dir>/sources/<dataset>-<key>.duckdb``, with the shared vocabulary
  mapped at conversion; ``key`` digests the file's path, size and modification time and the
  dataset's declaration, so a restart over the same file reuses the conversion and a changed file
  or mapping makes a new one. Conversion writes a temporary file and renames it, so a
  half-converted file is never opened. A Parquet file is converted because reading it in place
  costs every query the decompression and the code mapping (a list lookup per row) again: on a
  1M-row file a count takes about three times as long in place (docs/benchmarks.md).
* **Larger Parquet** is read where it lies, through a view over ``read_parquet`` that adds the
  shared-vocabulary columns as expressions, so DuckDB pushes projections and filters down into the
  scan and the query text is the same as over a conversion. The version reads a hard link to the
  file made in the state folder when that is possible: a file replaced by rename (the safe way to
  publish one) then leaves the old version's rows intact until its last job ends. Every query
  re-checks the file's size and modification time afterwards, so a file rewritten in place under a
  running job fails that job (``source_changed``) instead of answering from two versions.

What a version counts when it is built (rows per unit within the declared maximum, rows whose
category value maps to nothing) is kept next to it in ``<dataset>-<key>.json``, so a restart does
not scan a large file again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from nodes.check import category_columns, unmapped_sql
from nodes.config import Dataset, NodeConfig
from nodes.sqlgen import DUCKDB, SqlBuilder, premapped_name, quote_ident, table_name
from protocols.config_tables import byte_size
from protocols.errors import FederationError

log = logging.getLogger("federation.node")

SOURCES_DIR = "sources"  # under state_dir: converted CSV, pinned Parquet links, counts
SPILL_DIR = "duckdb_tmp"  # under state_dir, unless temp_directory is set
STABLE_RESULTS = 256  # small results kept per version (``FileVersion.fetch_stable``)


class SourceError(FederationError):
    """A data source cannot be read; the message names the dataset, never the data."""


@dataclass(frozen=True)
class Signature:
    """What tells one version of a file from the next: its size and modification time."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Signature:
        st = os.stat(path)
        return cls(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class DuckSettings:
    """The DuckDB settings of one source's database (docs/config.md, "DuckDB settings")."""

    memory_limit: str
    threads: int
    temp_directory: Path

    def config(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "memory_limit": self.memory_limit,
            "temp_directory": str(self.temp_directory),
            # Sources are read only: DuckDB need not keep insertion order for them.
            "preserve_insertion_order": False,
        }
        if self.threads:
            settings["threads"] = self.threads
        return settings


def duck_settings(config: NodeConfig, dataset: Dataset) -> DuckSettings:
    """The source's own settings where it sets them, the node's otherwise."""
    src = dataset.source
    spill = config.duckdb_temp_directory or (config.state_dir / SPILL_DIR)
    return DuckSettings(
        memory_limit=src.memory_limit or config.duckdb_memory_limit,
        threads=src.threads or config.duckdb_threads,
        temp_directory=spill / dataset.name,
    )


def connect(settings: DuckSettings, database: str = ":memory:", read_only: bool = False) -> Any:
    settings.temp_directory.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(database, read_only=read_only, config=settings.config())
    conn.execute("SET enable_progress_bar = false")
    return conn


def scan_sql(dataset: Dataset, path: Path | None = None) -> tuple[str, list[Any]]:
    """A FROM item reading the dataset's file in place, and its parameters (identifier columns are
    read as text, so leading zeros of KvK numbers and postcodes survive)."""
    src = dataset.source
    target = str(path or src.path)
    if src.kind == "csv":
        ids = {c.local: "VARCHAR" for c in dataset.columns.values() if c.kind == "identifier"}
        return "read_csv(?, header=true, types=?)", [target, ids]
    return "read_parquet(?)", [target]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def declaration_digest(dataset: Dataset) -> str:
    """What a conversion and its counts depend on besides the file: columns, codes, unit, bound."""
    declared = {
        "columns": [dataclasses.asdict(c) for c in dataset.columns.values()],
        "unit": dataset.privacy_unit,
        "max_rows": dataset.max_rows_per_unit,
        "kind": dataset.source.kind,
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True, default=str).encode()).hexdigest()


def version_key(dataset: Dataset, signature: Signature) -> str:
    text = json.dumps([dataclasses.asdict(signature), declaration_digest(dataset)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FileVersion:
    """One version of one file source: its own DuckDB database, and what was counted in it.

    Jobs hold a version while they run (``acquire``/``release``); a replaced version is closed and
    its files removed when the last job holding it lets go.
    """

    def __init__(
        self,
        dataset: Dataset,
        signature: Signature,
        key: str,
        conn: Any | None,
        files: list[Path],
        within_bound: bool,
        unmapped: dict[str, int],
        watched: Path | None,
        rows: int,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.signature = signature
        self.key = key
        self.files = files
        self.within_bound = within_bound
        self.unmapped = unmapped
        self.rows = rows
        # The file this version reads in place (Parquet): checked after each query.
        self._watched = watched
        self._watched_signature = Signature.of(watched) if watched is not None else None
        # Opened on first use when the version was counted before (``build_version``): an idle
        # node then holds no DuckDB database at all (docs/benchmarks.md, "Node memory at idle").
        self._conn = conn
        self._opener = opener
        self._lock = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False
        self._discard = False
        # Small results over this version's rows (``fetch_stable``), oldest dropped first.
        self._stable: OrderedDict[tuple[Any, ...], list[tuple[Any, ...]]] = OrderedDict()

    def acquire(self) -> FileVersion:
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._retired and self._users == 0
        if done:
            self._close()

    def retire(self, discard: bool = True) -> None:
        """No new job gets this version; it closes once the jobs holding it have ended, and with
        ``discard`` (a newer version replaced it) its files go too. A node that stops keeps them,
        so the next start reuses the conversion."""
        with self._lock:
            self._retired = True
            self._discard = discard
            done = self._users == 0
        if done:
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._conn is not None:
                self._conn.close()
        except duckdb.Error:
            pass
        if self._discard:
            for path in self.files:
                path.unlink(missing_ok=True)

    def _connection(self, node: str) -> Any:
        """The version's database, opened now if this is its first use; call under ``_lock``."""
        if self._conn is None:
            if self._opener is None or self._closed:
                raise SourceError(
                    "source_unavailable", f"dataset {self.dataset.name}: this version is closed", node=node
                )
            try:
                self._conn = self._opener()
            except duckdb.Error as exc:
                raise SourceError(
                    "source_unavailable",
                    f"dataset {self.dataset.name}: cannot open {Path(self.signature.path).name} "
                    f"({type(exc).__name__})",
                    node=node,
                ) from None
        return self._conn

    def fetch(self, sql: str, params: list[Any], node: str) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._connection(node).cursor()
        try:
            cursor.execute("SET enable_progress_bar = false")  # per connection; a node's log is no terminal
            rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()
        if self._watched is not None and not self._unchanged():
            raise SourceError(
                "source_changed",
                f"dataset {self.dataset.name}: the source file changed on disk while the job read it; "
                "nothing is released (ask again once the node has picked up the new file)",
                node=node,
            )
        return rows

    def fetch_columns(self, sql: str, params: list[Any], node: str) -> dict[str, Any]:
        """As ``fetch``, column by column as numpy arrays (model designs of millions of rows)."""
        with self._lock:
            cursor = self._connection(node).cursor()
        try:
            columns: dict[str, Any] = cursor.execute(sql, params).fetchnumpy()
        finally:
            cursor.close()
        if self._watched is not None and not self._unchanged():
            raise SourceError(
                "source_changed",
                f"dataset {self.dataset.name}: the source file changed on disk while the job read it; "
                "nothing is released (ask again once the node has picked up the new file)",
                node=node,
            )
        return columns

    def fetch_stable(self, sql: str, params: list[Any], node: str) -> list[tuple[Any, ...]]:
        """``fetch``, computed once per SQL and parameters: a version's rows never change (a
        changed file becomes a new version), so a result over them can be reused. A version that
        reads its file in place still checks the file on every use."""
        try:
            key: tuple[Any, ...] = (sql, *params)
            hash(key)
        except TypeError:
            return self.fetch(sql, params, node)
        with self._lock:
            hit = self._stable.get(key)
            if hit is not None:
                self._stable.move_to_end(key)
        if hit is None:
            rows = self.fetch(sql, params, node)
            with self._lock:
                self._stable[key] = list(rows)
                while len(self._stable) > STABLE_RESULTS:
                    self._stable.popitem(last=False)
            return rows
        if self._watched is not None and not self._unchanged():
            raise SourceError(
                "source_changed",
                f"dataset {self.dataset.name}: the source file changed on disk while the job read it; "
                "nothing is released (ask again once the node has picked up the new file)",
                node=node,
            )
        return list(hit)

    def _unchanged(self) -> bool:
        assert self._watched is not None
        try:
            return Signature.of(self._watched) == self._watched_signature
        except OSError:
            return False

    def ping(self) -> None:
        with self._lock:
            if self._conn is None:
                # Not opened yet: its files must still be there; opening it would undo the lazy open.
                for path in [p for p in self.files if p.suffix != ".json"] + [
                    w for w in [self._watched] if w
                ]:
                    os.stat(path)
                return
            cursor = self._conn.cursor()
        try:
            cursor.execute("SELECT 1").fetchone()
        finally:
            cursor.close()


def sources_dir(config: NodeConfig) -> Path:
    return config.state_dir / SOURCES_DIR


def _pin_parquet(source: Path, target: Path) -> Path | None:
    """A hard link to the Parquet file in the state folder, or ``None`` (another file system, or
    links not allowed): then the version reads the file in place and watches it."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        return None
    return target


def build_version(config: NodeConfig, dataset: Dataset, signature: Signature) -> FileVersion:
    """Open (CSV: convert first, unless already converted) a version of ``dataset``'s file."""
    node = config.node_id
    folder = sources_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    key = version_key(dataset, signature)
    stem = f"{dataset.name}-{key}"
    settings = duck_settings(config, dataset)
    path = Path(signature.path)
    counted = folder / f"{stem}.json"
    opener: Callable[[], Any]
    try:
        if converts(config, dataset, signature):
            database = folder / f"{stem}.duckdb"
            if database.exists():
                log.info("dataset %s: reusing the conversion of %s", dataset.name, path.name)
            else:
                _convert(dataset, signature, database, settings, node)
            opener = partial(connect, settings, str(database), True)
            files, watched = [database], None
        else:
            pinned = _pin_parquet(path, folder / f"{stem}.parquet")
            scan = pinned or path
            opener = partial(_parquet_view, settings, dataset, scan)
            files, watched = ([pinned] if pinned else []), scan
            if pinned is not None and Signature.of(path) != signature:
                raise _changed(dataset, node)
        # Counted before (same file, same declaration: the key digests both), so its declared
        # columns were checked then too: the database opens on the version's first query.
        counts = _read_counts(counted)
        conn = opener() if counts is None else None
    except duckdb.Error as exc:
        raise SourceError(
            "source_unavailable",
            f"dataset {dataset.name}: cannot read {path} ({type(exc).__name__})",
            node=node,
        ) from None
    if conn is not None:
        try:
            _check_declared(conn, dataset, node)
            counts = _counts(conn, dataset, counted)
        except duckdb.Error as exc:
            conn.close()
            # Out of memory lands here too: the operator raises memory_limit (docs/config.md).
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: cannot count {path.name} ({type(exc).__name__})",
                node=node,
            ) from None
        except BaseException:
            conn.close()
            raise
    assert counts is not None
    files.append(folder / f"{stem}.json")
    return FileVersion(
        dataset,
        signature,
        key,
        conn,
        files,
        within_bound=bool(counts["within_bound"]),
        unmapped={k: int(v) for k, v in counts["unmapped"].items()},
        watched=watched,
        rows=int(counts["rows"]),
        opener=opener,
    )


def _parquet_view(settings: DuckSettings, dataset: Dataset, scan: Path) -> Any:
    """A database with one view over the Parquet file (shared codes mapped in the view), under
    the dataset's table name."""
    conn = connect(settings)
    try:
        conn.execute(
            f"CREATE VIEW {quote_ident(table_name(dataset))} AS SELECT *{_mapped_columns(dataset)} "
            f"FROM read_parquet({_literal(str(scan))})"
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _changed(dataset: Dataset, node: str) -> SourceError:
    return SourceError(
        "source_changed",
        f"dataset {dataset.name}: the source file changed on disk while it was being loaded; "
        "the version in use stays until the file is still",
        node=node,
    )


def converts(config: NodeConfig, dataset: Dataset, signature: Signature) -> bool:
    """Whether this version is converted into a DuckDB file (every CSV file; a Parquet file
    smaller than ``parquet_convert_below``) rather than read in place."""
    if dataset.source.kind == "csv":
        return True
    limit = config.parquet_convert_below
    return limit != "0" and signature.size < byte_size(limit)


class _Literals(SqlBuilder):
    """Writes values into the text: a view cannot hold bound parameters."""

    def bind(self, value: Any) -> str:
        if isinstance(value, str):
            return _literal(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"no SQL literal for {type(value).__name__}")


def _mapped_columns(dataset: Dataset) -> str:
    """The shared-vocabulary columns a conversion adds, as expressions of a view over the file, so
    one SQL text serves both ways (nodes/sqlgen.py, ``premapped``); mapped per row as it is read,
    by a lookup in the list of codes (``SqlBuilder.lookup``), with the codes and values written as
    quoted literals from the operator's config."""
    builder = _Literals(DUCKDB)
    mapped = [c for c in dataset.columns.values() if c.kind == "category" and c.codes]
    return "".join(f", {builder.shared(c)} AS {quote_ident(premapped_name(c))}" for c in mapped)


def _convert(
    dataset: Dataset, signature: Signature, database: Path, settings: DuckSettings, node: str
) -> None:
    """The file into a DuckDB file, shared vocabulary mapped once; written aside, then renamed."""
    partial = database.with_name(f"{database.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    name = quote_ident(table_name(dataset))
    scan, params = scan_sql(dataset, Path(signature.path))
    mapped = [c for c in dataset.columns.values() if c.kind == "category" and c.codes]
    builder = SqlBuilder(DUCKDB)
    extra = "".join(f", {builder.shared(c)} AS {quote_ident(premapped_name(c))}" for c in mapped)
    conn = connect(settings, str(partial))
    try:
        conn.execute(f"CREATE TABLE {name} AS SELECT *{extra} FROM {scan}", builder.params + params)
        conn.execute("CHECKPOINT")
    except BaseException:
        conn.close()
        partial.unlink(missing_ok=True)
        raise
    conn.close()
    if Signature.of(Path(signature.path)) != signature:
        partial.unlink(missing_ok=True)
        raise _changed(dataset, node)
    os.replace(partial, database)


def _check_declared(conn: Any, dataset: Dataset, node: str) -> None:
    name = quote_ident(table_name(dataset))
    present = {row[0] for row in conn.execute(f"DESCRIBE {name}").fetchall()}
    missing = sorted(c.local for c in dataset.columns.values() if c.local not in present)
    if missing:
        assert dataset.source.path is not None
        raise SourceError(
            "config",
            f"dataset {dataset.name}: declared columns missing from {dataset.source.path.name}: {missing}",
            node=node,
        )


def _read_counts(path: Path) -> dict[str, Any] | None:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return known if isinstance(known, dict) and set(known) == {"rows", "within_bound", "unmapped"} else None


def known_counts(config: NodeConfig, dataset: Dataset) -> dict[str, Any] | None:
    """What the node counted in the file's current version, if it has loaded that version before
    (``federation node check`` then need not scan a large file again at every start)."""
    if dataset.source.path is None:
        return None
    try:
        signature = Signature.of(dataset.source.path)
    except OSError:
        return None
    return _read_counts(sources_dir(config) / f"{dataset.name}-{version_key(dataset, signature)}.json")


def _counts(conn: Any, dataset: Dataset, path: Path) -> dict[str, Any]:
    """Rows, whether every unit is within ``max_rows_per_unit``, and unmapped rows per category
    column: read from ``path`` when this version was counted before, else counted and kept."""
    known = _read_counts(path)
    if known is not None:
        return known
    name = quote_ident(table_name(dataset))
    unit = quote_ident(dataset.columns[dataset.privacy_unit].local)
    top = conn.execute(
        f"SELECT max(c), sum(c) FROM (SELECT count(*) AS c FROM {name} GROUP BY {unit})"
    ).fetchone()
    unmapped: dict[str, int] = {}
    columns = category_columns(dataset)
    if columns:
        sql, params = unmapped_sql(columns, DUCKDB, name)
        found = conn.execute(sql, params).fetchone() or ()
        unmapped = {c.name: int(n or 0) for c, n in zip(columns, found, strict=True)}
    counts = {
        "rows": int((top[1] if top else 0) or 0),
        "within_bound": top is not None and (top[0] or 0) <= dataset.max_rows_per_unit,
        "unmapped": unmapped,
    }
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(counts))
    os.replace(partial, path)
    return counts


def stale_files(config: NodeConfig, dataset: Dataset, keep: set[Path]) -> list[Path]:
    """Files of ``dataset`` in the sources folder that no current version uses (left by a crash
    or by a version of a file that has since changed)."""
    folder = sources_dir(config)
    if not folder.is_dir():
        return []
    prefix = f"{dataset.name}-"
    found = []
    for path in folder.iterdir():
        rest = path.name[len(prefix) :] if path.name.startswith(prefix) else ""
        ours = len(rest) > 17 and rest[16] == "." and all(c in "0123456789abcdef" for c in rest[:16])
        if ours and path not in keep:
            found.append(path)
    return found
