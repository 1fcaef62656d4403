"""Node configuration: datasets, their declared schema, the vocabulary mapping and the policy.

The operator's config is the last word on what a node serves (see docs/config.md).
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.config_tables import Table, byte_size, check_table, table_model
from protocols.errors import ConfigError
from protocols.identity import PkiError, TlsFiles, tls_files
from protocols.metrics_http import loopback_address
from protocols.web.settings import ConsoleSettings, parse_console

OPERATIONS = ("count", "count_distinct", "sum", "avg", "variance", "percentile")
COLUMN_KINDS = ("category", "numeric", "date", "identifier")
SOURCE_KINDS = ("csv", "parquet", "postgres", "spark")
# Where a spark source's cluster is: a local session (tests, one machine), a standalone master or
# Spark Connect (docs/config.md).
SPARK_URL_PREFIXES = ("local", "spark://", "sc://")
SPARK_FORMATS = ("parquet", "orc")
ID_TYPES = ("kvk", "person", "iban", "postcode", "text")

CategoryValue = str | int


@dataclass(frozen=True)
class Column:
    name: str
    local: str
    kind: str
    domain: tuple[CategoryValue, ...] = ()
    codes: dict[str, CategoryValue] = field(default_factory=dict)
    bounds: tuple[float, float] | None = None
    date_range: tuple[dt.date, dt.date] | None = None  # date columns: the public first and last day
    id_type: str = ""
    description: str = ""

    def local_codes_for(self, value: CategoryValue) -> list[Any]:
        """Local codes that mean the shared ``value`` (the value itself when no codes are mapped)."""
        if not self.codes:
            return [value]
        return [local for local, shared in self.codes.items() if shared == value]


@dataclass(frozen=True)
class Policy:
    min_group_size: int = 10
    operations: tuple[str, ...] = OPERATIONS
    max_groups: int = 2000
    dp_required: bool = True
    default_epsilon: float = 1.0  # spent per query when the analyst names no budget
    max_epsilon: float = 5.0  # per-query cap
    budget_epsilon: float = 10.0  # total per (dataset, project) without a grant, when require_budget is off
    budget_delta: float = 1e-6  # the delta at which officers read epsilon
    # No DP release for a project the officer has not granted a budget (privacy/ledger.py).
    require_budget: bool = True
    dataset_budget_epsilon: float = 10.0  # total per dataset over all projects until the officer sets a cap
    release: str = "plain"
    # DP releases: "combined" lets the coordinator decide suppression once, on the summed noisy
    # count (docs/privacy.md); "node" suppresses here, on this node's own noisy count.
    suppression: str = "combined"
    secure_min_nodes: int = 3  # the fewest participants a secure aggregation may have to include this node
    # Entity overlap (docs/overlap.md): identifier columns that may take part (none by default),
    # bounds on a party's set size, whether overlap releases need DP, Paillier key size for sums.
    overlap_columns: tuple[str, ...] = ()
    overlap_min_set: int = 100
    overlap_max_set: int = 1_000_000
    overlap_dp_required: bool = True
    overlap_key_bits: int = 2048
    overlap_preblind: bool = True  # pre-blind allowed identifier columns while idle (nodes/preblind.py)
    # Under DP the set-size bounds are checked on a noisy size, charged at this epsilon first.
    overlap_check_epsilon: float = 0.2
    # Purpose binding (docs/projects.md): projects and purposes that may use the data (None: any),
    # and the job kinds and projects that need this node's officer's approval per job.
    projects: tuple[str, ...] | None = None
    purposes: tuple[str, ...] | None = None
    approval_required: tuple[str, ...] = ()
    approval_projects: tuple[str, ...] = ()
    # Differencing defence for exact releases (nodes/differencing.py): releases kept per
    # dataset, over all projects, to check new ones against; 0 turns the check off.
    differencing_history: int = 100


@dataclass(frozen=True)
class Source:
    kind: str
    path: Path | None = None
    dsn: str = ""
    table: str = ""
    # File sources: this source's DuckDB memory_limit and threads; "" and 0 take the node's.
    memory_limit: str = ""
    threads: int = 0
    # Spark sources (nodes/spark_source.py): the cluster, files it reads (when not a catalog table),
    # their format, extra Spark settings, and the environment variable holding a Connect token.
    url: str = ""
    location: str = ""
    format: str = ""
    conf: tuple[tuple[str, str], ...] = ()
    token_env: str = ""


@dataclass(frozen=True)
class Dataset:
    name: str
    source: Source
    columns: dict[str, Column]
    privacy_unit: str
    max_rows_per_unit: int
    policy: Policy
    exposed: bool = True
    description: str = ""
    controller: str = ""

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    coordinator: str
    state_dir: Path
    datasets: dict[str, Dataset]
    policy: Policy
    heartbeat_seconds: float = 5.0
    path: Path | None = None
    tls: TlsFiles | None = None
    insecure: bool = False  # development only: plaintext gRPC, no peer identities
    # The audit log's Ed25519 signing key; unset: <state_dir>/audit_signing.key (demo only: docs/audit.md).
    audit_signing_key: Path | None = None
    # Prometheus metrics and /healthz over HTTP on this loopback host:port; "" serves none.
    metrics_listen: str = ""
    # The officer's web console ([console] table, docs/console.md); None serves none.
    console: ConsoleSettings | None = None
    # File sources (nodes/file_sources.py): each source's DuckDB gets this memory limit and
    # thread count (0: DuckDB's own, one per core) unless its [datasets.source] sets its own,
    # and spills past the limit to temp_directory (unset: <state_dir>/duckdb_tmp).
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 0
    duckdb_temp_directory: Path | None = None
    # Parquet files smaller than this are converted once into a DuckDB file with codes mapped, as
    # CSV is (fast repeated queries); larger ones are read in place. "0": every file in place.
    parquet_convert_below: str = "256MB"
    # How often the node looks for file sources changed on disk (0: only on `federation node reload`).
    source_check_seconds: float = 2.0

    @property
    def audit_key_path(self) -> Path:
        return self.audit_signing_key or self.state_dir / "audit_signing.key"


# Strict shapes of the TOML tables (protocols/config_tables.py): unknown keys and wrong types are
# refused, naming the key. [policy] and [node] follow their dataclasses, so a new setting is
# declared once.
TLS_KEYS = {key: str for key in ("tls_dir", "tls_cert", "tls_key", "tls_ca", "tls_crl")}
PolicyTable = table_model("PolicyTable", Policy)
NodeTable = table_model(
    "NodeTable",
    NodeConfig,
    skip=("datasets", "policy", "path", "tls", "console"),
    rename={"node_id": "id"},
    extra=TLS_KEYS,
)


class NodeFile(Table):
    node: dict[str, Any]
    policy: dict[str, Any] = {}
    datasets: list[dict[str, Any]] = []
    console: dict[str, Any] | None = None


class DatasetTable(Table):
    name: str
    source: dict[str, Any]
    privacy_unit: str
    max_rows_per_unit: int = 1
    exposed: bool = True
    description: str = ""
    controller: str = ""
    policy: dict[str, Any] = {}
    columns: list[dict[str, Any]] = []


class SourceTable(Table):
    kind: str
    path: str | None = None
    dsn: str | None = None
    table: str | None = None
    memory_limit: str | None = None
    threads: int | None = None
    url: str | None = None
    format: str | None = None
    conf: dict[str, str] | None = None
    token_env: str | None = None


class ColumnTable(Table):
    name: str
    kind: str
    local: str | None = None
    domain: list[str | int] | None = None
    codes: dict[str, str | int] | None = None
    bounds: list[float] | None = None
    range: list[str | dt.date] | None = None
    id_type: str | None = None
    description: str = ""


def _date_range(raw: dict[str, Any], kind: str, here: str) -> tuple[dt.date, dt.date] | None:
    """A date column's optional public range, ``range = ["2019-01-01", "2024-12-31"]``."""
    if "range" not in raw:
        return None
    if kind != "date":
        raise ConfigError(f"{here}: range is for date columns; numeric columns declare bounds")
    items = _list(raw["range"], "range", here)
    try:
        first, last = (v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in items)
    except ValueError:
        raise ConfigError(f"{here}: range must be [first, last] as 'YYYY-MM-DD' dates") from None
    if first > last:
        raise ConfigError(f"{here}: range must be [first, last] with first <= last")
    return first, last


def _require(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing required key '{key}'")
    return table[key]


def _number(value: Any, key: str, where: str, integer: bool = False) -> float:
    """A finite number (an int where ``integer``), or a ConfigError naming the key."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and not isinstance(value, int)):
        kind = "a whole number" if integer else "a finite number"
        raise ConfigError(f"{where}: {key} must be {kind}, not {value!r}")
    return value


def _list(value: Any, key: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list, not {value!r}")
    return value


def _policy(raw: dict[str, Any], base: Policy, where: str) -> Policy:
    check_table(raw, PolicyTable, where)
    known = set(Policy.__dataclass_fields__)
    values = {k: raw.get(k, getattr(base, k)) for k in known}
    for key in ("min_group_size", "max_groups"):
        _number(values[key], key, where, integer=True)
        if values[key] < 1:
            raise ConfigError(f"{where}: {key} must be at least 1")
    for key in ("default_epsilon", "max_epsilon", "budget_epsilon", "budget_delta", "dataset_budget_epsilon"):
        _number(values[key], key, where)
    if float(values["dataset_budget_epsilon"]) < 0:
        raise ConfigError(f"{where}: dataset_budget_epsilon must be 0 or more")
    values["operations"] = tuple(
        _list(
            list(values["operations"]) if isinstance(values["operations"], tuple) else values["operations"],
            "operations",
            where,
        )
    )
    bad = [op for op in values["operations"] if op not in OPERATIONS]
    if bad:
        raise ConfigError(f"{where}: unknown operation(s) {bad}; allowed: {list(OPERATIONS)}")
    if int(values["min_group_size"]) < 1:
        raise ConfigError(f"{where}: min_group_size must be at least 1")
    for key in ("default_epsilon", "max_epsilon", "budget_epsilon"):
        if not float(values[key]) > 0:
            raise ConfigError(f"{where}: {key} must be a positive number")
    if float(values["default_epsilon"]) > float(values["max_epsilon"]):
        raise ConfigError(f"{where}: default_epsilon must not exceed max_epsilon")
    if not 0 < float(values["budget_delta"]) < 1:
        raise ConfigError(f"{where}: budget_delta must be in (0, 1)")
    if values["release"] not in ("plain", "secure"):
        raise ConfigError(f"{where}: release must be 'plain' or 'secure'")
    if values["suppression"] not in ("combined", "node"):
        raise ConfigError(f"{where}: suppression must be 'combined' or 'node'")
    if _number(values["differencing_history"], "differencing_history", where, integer=True) < 0:
        raise ConfigError(f"{where}: differencing_history must be 0 (off) or more")
    _number(values["secure_min_nodes"], "secure_min_nodes", where, integer=True)
    if values["secure_min_nodes"] < 2:
        raise ConfigError(f"{where}: secure_min_nodes must be at least 2")
    _overlap_policy(values, where)
    _project_policy(values, where)
    return Policy(**values)


APPROVAL_KINDS = ("query", "secure", "overlap", "model")


def _project_policy(values: dict[str, Any], where: str) -> None:
    """Check and normalise the purpose-binding and approval policy keys in place."""
    for key in ("projects", "purposes", "approval_required", "approval_projects"):
        value = values[key]
        if value is None and key in ("projects", "purposes"):
            continue
        items = _list(list(value) if isinstance(value, tuple) else value, key, where)
        if any(not isinstance(item, str) or not item.strip() for item in items):
            raise ConfigError(f"{where}: {key} must list non-empty names")
        values[key] = tuple(item.strip() for item in items)
    bad = [k for k in values["approval_required"] if k not in APPROVAL_KINDS]
    if bad:
        raise ConfigError(
            f"{where}: approval_required lists unknown job kind(s) {bad}; allowed: {list(APPROVAL_KINDS)}"
        )


def _overlap_policy(values: dict[str, Any], where: str) -> None:
    """Check and normalise the overlap_* policy keys in place."""
    columns = values["overlap_columns"]
    columns = _list(list(columns) if isinstance(columns, tuple) else columns, "overlap_columns", where)
    if any(not isinstance(c, str) or not c for c in columns):
        raise ConfigError(f"{where}: overlap_columns must list identifier column names")
    values["overlap_columns"] = tuple(columns)
    for key in ("overlap_min_set", "overlap_max_set", "overlap_key_bits"):
        if _number(values[key], key, where, integer=True) < 1:
            raise ConfigError(f"{where}: {key} must be at least 1")
    if values["overlap_min_set"] > values["overlap_max_set"]:
        raise ConfigError(f"{where}: overlap_min_set must not exceed overlap_max_set")
    if values["overlap_key_bits"] < 1024:
        raise ConfigError(f"{where}: overlap_key_bits must be at least 1024")
    if not _number(values["overlap_check_epsilon"], "overlap_check_epsilon", where) > 0:
        raise ConfigError(f"{where}: overlap_check_epsilon must be a positive number")
    for key in ("overlap_dp_required", "overlap_preblind"):
        if not isinstance(values[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false")


def _column(raw: dict[str, Any], where: str) -> Column:
    name = raw.get("name") if isinstance(raw, dict) else None
    check_table(raw, ColumnTable, f"{where} column {name}" if isinstance(name, str) else f"{where} column")
    name = str(_require(raw, "name", where))
    kind = str(_require(raw, "kind", f"{where} column {name}"))
    if kind not in COLUMN_KINDS:
        raise ConfigError(f"{where} column {name}: kind must be one of {list(COLUMN_KINDS)}")
    here = f"{where} column {name}"
    domain: tuple[CategoryValue, ...] = ()
    bounds = None
    if kind == "category":
        domain = tuple(_list(_require(raw, "domain", here), "domain", here))
        if not domain:
            raise ConfigError(f"{here}: a category column needs a non-empty public domain")
        if any(isinstance(v, bool) or not isinstance(v, str | int) for v in domain):
            raise ConfigError(f"{here}: domain values must be text or whole numbers")
        if len(set(domain)) != len(domain):
            raise ConfigError(f"{here}: domain lists a value twice")
    if kind == "numeric":
        bounds_raw = _list(_require(raw, "bounds", here), "bounds", here)
        if len(bounds_raw) != 2:
            raise ConfigError(f"{here}: bounds must be [lower, upper]")
        lo, hi = (_number(b, "bounds", here) for b in bounds_raw)
        if not float(lo) < float(hi):
            raise ConfigError(f"{here}: bounds must be [lower, upper] with lower < upper")
        bounds = (float(lo), float(hi))
    date_range = _date_range(raw, kind, here)
    codes_raw = raw.get("codes", {})
    if not isinstance(codes_raw, dict):
        raise ConfigError(f"{here}: codes must be a table of local code = shared value")
    codes = {str(k): v for k, v in codes_raw.items()}
    missing = [v for v in codes.values() if v not in domain]
    if missing:
        raise ConfigError(f"{here}: codes map to values outside the domain: {missing}")
    id_type = str(raw.get("id_type", "text" if kind == "identifier" else ""))
    if kind == "identifier" and id_type not in ID_TYPES:
        raise ConfigError(f"{here}: id_type must be one of {list(ID_TYPES)}")
    return Column(
        name=name,
        local=str(raw.get("local", name)),
        kind=kind,
        domain=domain,
        codes=codes,
        bounds=bounds,
        date_range=date_range,
        id_type=id_type,
        description=str(raw.get("description", "")),
    )


def _source(raw: dict[str, Any], base: Path, where: str) -> Source:
    check_table(raw, SourceTable, f"{where} source")
    kind = str(_require(raw, "kind", f"{where} source"))
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"{where} source: kind must be one of {list(SOURCE_KINDS)}")
    if kind == "postgres":
        return Source(
            kind=kind,
            dsn=str(_require(raw, "dsn", f"{where} source")),
            table=str(_require(raw, "table", f"{where} source")),
        )
    if kind == "spark":
        return _spark_source(raw, base, where)
    path = Path(str(_require(raw, "path", f"{where} source")))
    return Source(
        kind=kind,
        path=path if path.is_absolute() else (base / path).resolve(),
        memory_limit=_memory_limit(
            raw.get("memory_limit", ""), f"{where} source", "memory_limit", empty=True
        ),
        threads=_threads(raw.get("threads", 0), f"{where} source", "threads"),
    )


def _memory_limit(value: str, where: str, key: str, empty: bool = False) -> str:
    """A DuckDB memory size such as "1GB" or "512MiB"; refused here, not when a source opens."""
    if empty and value == "":
        return ""
    try:
        byte_size(value)
    except ValueError:
        raise ConfigError(f"{where}: {key} must be a size such as '1GB' or '512MB', not {value!r}") from None
    return value.strip()


def _threads(value: int, where: str, key: str) -> int:
    if value < 0:
        raise ConfigError(f"{where}: {key} must be 0 (DuckDB's default) or more, not {value!r}")
    return value


def _spark_source(raw: dict[str, Any], base: Path, where: str) -> Source:
    here = f"{where} source"
    url = str(_require(raw, "url", here))
    if not url.startswith(SPARK_URL_PREFIXES):
        raise ConfigError(f"{here}: url must start with one of {list(SPARK_URL_PREFIXES)}")
    table, path = raw.get("table"), raw.get("path")
    if (table is None) == (path is None):
        raise ConfigError(f"{here}: a spark source names either a catalog table or a path, not both")
    fmt = str(raw.get("format", "parquet"))
    if fmt not in SPARK_FORMATS:
        raise ConfigError(f"{here}: format must be one of {list(SPARK_FORMATS)}")
    token_env = str(raw.get("token_env", ""))
    if token_env and not url.startswith("sc://"):
        raise ConfigError(f"{here}: token_env is for Spark Connect (sc://) urls only")
    if ";token=" in url.lower():
        # A token written into the config file would be readable by whoever reads the config.
        raise ConfigError(f"{here}: put the Spark Connect token in an environment variable (token_env)")
    if "memory_limit" in raw or "threads" in raw:
        raise ConfigError(f"{here}: memory_limit and threads are for file sources; Spark takes conf")
    location = ""
    if path is not None:
        location = str(path)
        # Cluster storage (hdfs://, s3a://, ...) is taken as is; a local path is relative to the config.
        if "://" not in location and not Path(location).is_absolute():
            location = str((base / location).resolve())
    return Source(
        kind="spark",
        table=str(table or ""),
        url=url,
        location=location,
        format=fmt if path is not None else "",
        conf=tuple(sorted((str(k), str(v)) for k, v in (raw.get("conf") or {}).items())),
        token_env=token_env,
    )


def _dataset(raw: dict[str, Any], base: Path, policy: Policy) -> Dataset:
    name = raw.get("name") if isinstance(raw, dict) else None
    check_table(raw, DatasetTable, f"dataset {name}" if isinstance(name, str) else "[[datasets]]")
    name = str(_require(raw, "name", "dataset"))
    where = f"dataset {name}"
    columns = [_column(c, where) for c in raw.get("columns", [])]
    by_name = {c.name: c for c in columns}
    if len(by_name) != len(columns):
        raise ConfigError(f"{where}: duplicate column names")
    unit = str(_require(raw, "privacy_unit", where))
    if unit not in by_name or by_name[unit].kind != "identifier":
        raise ConfigError(f"{where}: privacy_unit '{unit}' must name an identifier column")
    max_rows = int(_number(raw.get("max_rows_per_unit", 1), "max_rows_per_unit", where, integer=True))
    if max_rows < 1:
        raise ConfigError(f"{where}: max_rows_per_unit must be at least 1")
    return Dataset(
        name=name,
        source=_source(_require(raw, "source", where), base, where),
        columns=by_name,
        privacy_unit=unit,
        max_rows_per_unit=max_rows,
        policy=_policy(raw.get("policy", {}), policy, f"{where} policy"),
        exposed=bool(raw.get("exposed", True)),
        description=str(raw.get("description", "")),
        controller=str(raw.get("controller", "")),
    )


def parse_node_config(raw: dict[str, Any], base: Path, path: Path | None = None) -> NodeConfig:
    check_table(raw, NodeFile, "config")
    node = _require(raw, "node", "config")
    check_table(node, NodeTable, "[node]")
    node_id = str(_require(node, "id", "[node]"))
    if not node_id.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"[node] id '{node_id}' may only hold letters, digits, '-' and '_'")
    policy = _policy(raw.get("policy", {}), Policy(), "[policy]")
    datasets = [_dataset(d, base, policy) for d in raw.get("datasets", [])]
    by_name = {d.name: d for d in datasets}
    if len(by_name) != len(datasets):
        raise ConfigError("config: duplicate dataset names")
    spark = {(d.source.url, d.source.conf, d.source.token_env) for d in datasets if d.source.kind == "spark"}
    if len(spark) > 1:
        # One Spark session per node process: a JVM holds one SparkContext.
        raise ConfigError("config: every spark source of a node must give the same url, conf and token_env")
    if "heartbeat_seconds" in node and not node["heartbeat_seconds"] > 0:
        raise ConfigError(
            f"[node] heartbeat_seconds must be greater than 0, not {node['heartbeat_seconds']!r}"
        )
    state = Path(str(node.get("state_dir", f"state/{node_id}")))
    audit_key = node.get("audit_signing_key")
    if audit_key is not None and (not isinstance(audit_key, str) or not audit_key.strip()):
        raise ConfigError("[node] audit_signing_key must be a file path")
    return NodeConfig(
        node_id=node_id,
        coordinator=str(node.get("coordinator", "127.0.0.1:7100")),
        state_dir=state if state.is_absolute() else (base / state).resolve(),
        datasets=by_name,
        policy=policy,
        heartbeat_seconds=float(node.get("heartbeat_seconds", 5)),
        path=path,
        tls=_tls(node, base),
        insecure=bool(node.get("insecure", False)),
        audit_signing_key=None if audit_key is None else (base / Path(audit_key).expanduser()).resolve(),
        metrics_listen=_metrics_listen(node),
        console=None if raw.get("console") is None else parse_console(raw["console"], base),
        duckdb_memory_limit=_memory_limit(
            node.get("duckdb_memory_limit", "1GB"), "[node]", "duckdb_memory_limit"
        ),
        duckdb_threads=_threads(node.get("duckdb_threads", 0), "[node]", "duckdb_threads"),
        duckdb_temp_directory=_spill_folder(node, base),
        parquet_convert_below=_convert_below(node),
        source_check_seconds=_check_interval(node),
    )


def _spill_folder(node: dict[str, Any], base: Path) -> Path | None:
    raw = node.get("duckdb_temp_directory")
    if raw is None:
        return None
    if not raw.strip():
        raise ConfigError("[node] duckdb_temp_directory must be a folder path")
    return (base / Path(raw).expanduser()).resolve()


def _convert_below(node: dict[str, Any]) -> str:
    value = node.get("parquet_convert_below", "256MB")
    if value == "0":
        return value
    try:
        byte_size(value)
    except ValueError:
        raise ConfigError(
            "[node] parquet_convert_below must be a size such as '256MB', or '0' (every Parquet file "
            f"read in place), not {value!r}"
        ) from None
    return str(value).strip()


def _check_interval(node: dict[str, Any]) -> float:
    seconds = float(_number(node.get("source_check_seconds", 2.0), "source_check_seconds", "[node]"))
    if seconds < 0:
        raise ConfigError(f"[node] source_check_seconds must be 0 (reload only) or more, not {seconds!r}")
    return seconds


def _metrics_listen(node: dict[str, Any]) -> str:
    listen = str(node.get("metrics_listen", ""))
    if listen:
        loopback_address(listen, "[node]")  # refused now, not when the node starts serving
    return listen


def _tls(node: dict[str, Any], base: Path) -> TlsFiles | None:
    try:
        return tls_files(node, base, "[node]")
    except PkiError as exc:
        raise ConfigError(exc.message, rule=exc.rule) from None


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", rule="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_node_config(path: str | Path) -> NodeConfig:
    p = Path(path).resolve()
    return parse_node_config(load_toml(p), p.parent, p)
