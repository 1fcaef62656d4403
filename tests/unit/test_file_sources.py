"""File sources as versions (nodes/file_sources.py, nodes/sources.py): CSV and small Parquet
converted once, larger Parquet read in place, changed files picked up whole, jobs pinned to one
version, DuckDB memory limits."""

from __future__ import annotations

import json
import os
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import tomli_w

from nodes.config import NodeConfig, load_node_config
from nodes.file_sources import SOURCES_DIR
from nodes.sources import DataSources
from protocols.config_tables import byte_size
from protocols.errors import ConfigError, FederationError

QUERY = "SELECT port, COUNT(*), SUM(value) FROM declarations GROUP BY port"
# The ways a file source is served: CSV converted, Parquet converted (a small file, by default),
# Parquet read in place (``parquet_convert_below = "0"``).
WAYS = ["csv", "parquet", "parquet-in-place"]


def _node(folder: Path, frame: pd.DataFrame, customs: Any, kind: str = "csv", **node: Any) -> NodeConfig:
    """The customs node over ``frame`` written as ``kind`` (one of ``WAYS``), with extra [node]
    settings."""
    if kind == "parquet-in-place":
        kind = "parquet"
        node.setdefault("parquet_convert_below", "0")
    path = customs.write_csv_node(folder, frame)
    if kind == "parquet":
        frame.to_parquet(folder / "data" / "declarations.parquet", index=False)
    raw = tomllib.loads(path.read_text())
    raw["node"].update(node)
    raw["datasets"][0]["source"] = {"kind": kind, "path": f"data/declarations.{kind}"}
    path.write_text(tomli_w.dumps(raw))
    return load_node_config(path)


def _answer(sources: DataSources, config: NodeConfig, customs: Any) -> list[tuple[Any, ...]]:
    return sorted(sources.run(customs.plan_for(QUERY, config)), key=str)


def _replace(path: Path, frame: pd.DataFrame) -> None:
    """Publish a new version of a data file the safe way: written aside, then renamed."""
    aside = path.with_name(f".{path.name}.new")
    if path.suffix == ".csv":
        frame.to_csv(aside, index=False)
    else:
        frame.to_parquet(aside, index=False)
    os.replace(aside, path)


@pytest.mark.parametrize("kind", WAYS)
def test_answers_match_the_in_memory_load(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any, kind: str
) -> None:
    config = _node(tmp_path, declarations, customs, kind)
    sources = DataSources(config)
    try:
        got = _answer(sources, config, customs)
    finally:
        sources.close()
    # The same query over the rows loaded into an in-memory DuckDB, as nodes did before.
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE ds_declarations AS SELECT * FROM read_csv(?, header=true, types=?)",
        [str(tmp_path / "data" / "declarations.csv"), {"kvk_nummer": "VARCHAR"}],
    )
    from nodes.sqlgen import DUCKDB, build_sql

    plan = customs.plan_for(QUERY, config)
    sql, params = build_sql(plan, DUCKDB, truncate=True)
    assert got == sorted(con.execute(sql, params).fetchall(), key=str)


def test_csv_is_converted_once_and_reused(tmp_path: Path, declarations: pd.DataFrame, customs: Any) -> None:
    config = _node(tmp_path, declarations, customs)
    first = DataSources(config)
    answer = _answer(first, config, customs)
    first.close()
    converted = sorted((config.state_dir / SOURCES_DIR).glob("declarations-*.duckdb"))
    assert len(converted) == 1
    before = converted[0].stat()
    second = DataSources(config)
    try:
        assert _answer(second, config, customs) == answer
    finally:
        second.close()
    after = converted[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "converted again"
    assert sorted((config.state_dir / SOURCES_DIR).glob("declarations-*.duckdb")) == converted


@pytest.mark.parametrize("kind", WAYS)
def test_changed_file_becomes_a_new_version(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any, kind: str
) -> None:
    config = _node(tmp_path, declarations, customs, kind)
    sources = DataSources(config)
    try:
        old = _answer(sources, config, customs)
        assert sources.refresh().unchanged == ["declarations"]
        suffix = kind.removesuffix("-in-place")
        _replace(tmp_path / "data" / f"declarations.{suffix}", declarations.head(len(declarations) // 2))
        # The timer waits until the file held still for one check; a reload takes it at once.
        assert sources.refresh().waiting == ["declarations"]
        assert _answer(sources, config, customs) == old
        report = sources.refresh()
        assert report.reloaded == {"declarations": len(declarations) // 2}
        new = _answer(sources, config, customs)
        assert new != old
        # The old version's files are gone once no job holds it; the new one's stay.
        files = list((config.state_dir / SOURCES_DIR).iterdir())
        assert len([f for f in files if f.suffix == ".json"]) == 1
    finally:
        sources.close()


def test_a_small_parquet_file_is_converted_once_and_a_large_one_read_in_place(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    config = _node(tmp_path, declarations, customs, "parquet")
    size = (tmp_path / "data" / "declarations.parquet").stat().st_size
    assert size < byte_size(config.parquet_convert_below)  # the default threshold
    folder = config.state_dir / SOURCES_DIR
    first = DataSources(config)
    answer = _answer(first, config, customs)
    first.close()
    (converted,) = folder.glob("declarations-*.duckdb")
    assert not list(folder.glob("*.parquet")), "read in place, not converted"
    before = converted.stat()
    second = DataSources(config)
    try:
        assert _answer(second, config, customs) == answer
    finally:
        second.close()
    after = converted.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "converted again"
    # Past the threshold the same file is read in place; the conversion is left over, then removed.
    path = tmp_path / "node.toml"
    raw = tomllib.loads(path.read_text())
    raw["node"]["parquet_convert_below"] = f"{size}B"
    path.write_text(tomli_w.dumps(raw))
    large = load_node_config(path)
    third = DataSources(large)
    try:
        assert _answer(third, large, customs) == answer
        assert len(list(folder.glob("*.parquet"))) == 1
        assert not list(folder.glob("*.duckdb"))
    finally:
        third.close()


def test_a_job_reads_one_version_while_a_new_one_is_swapped_in(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    config = _node(tmp_path, declarations, customs, "parquet-in-place")
    sources = DataSources(config)
    path = tmp_path / "data" / "declarations.parquet"
    try:
        old = _answer(sources, config, customs)
        in_job: list[list[tuple[Any, ...]]] = []
        swapped = threading.Event()
        reading = threading.Event()

        def job() -> None:
            with sources.pinned():
                in_job.append(_answer(sources, config, customs))
                reading.set()
                assert swapped.wait(30)
                # Pinned: still the version the job started on, although a newer one is current.
                in_job.append(_answer(sources, config, customs))

        worker = threading.Thread(target=job)
        worker.start()
        assert reading.wait(30)
        _replace(path, declarations.head(100))
        assert sources.refresh(force=True).reloaded == {"declarations": 100}
        outside = _answer(sources, config, customs)
        swapped.set()
        worker.join(30)
        assert in_job == [old, old]
        assert outside != old
        assert _answer(sources, config, customs) == outside
        # The old version closed (and its pinned link went) when the job let go of it.
        assert len(list((config.state_dir / SOURCES_DIR).glob("*.parquet"))) == 1
    finally:
        sources.close()


def test_a_file_rewritten_in_place_during_a_read_fails_the_job(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    config = _node(tmp_path, declarations, customs, "parquet-in-place")
    sources = DataSources(config)
    try:
        pinned = next((config.state_dir / SOURCES_DIR).glob("*.parquet"))
        # Rewritten in place (not replaced): the pinned link shares the inode, so the node must
        # notice rather than mix rows of two versions.
        declarations.head(10).to_parquet(pinned, index=False)
        with pytest.raises(Exception) as refused:
            _answer(sources, config, customs)
        assert getattr(refused.value, "rule", "") == "source_changed"
    finally:
        sources.close()


def test_failed_new_version_keeps_the_old_one(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    config = _node(tmp_path, declarations, customs, "parquet")
    sources = DataSources(config)
    try:
        old = _answer(sources, config, customs)
        broken = tmp_path / "data" / "broken.parquet"
        broken.write_bytes(b"not parquet at all")
        os.replace(broken, tmp_path / "data" / "declarations.parquet")
        report = sources.refresh(force=True)
        assert "source_unavailable" in report.failed["declarations"]
        assert _answer(sources, config, customs) == old
    finally:
        sources.close()


def test_small_memory_limit_over_a_larger_parquet_file(tmp_path: Path, customs: Any) -> None:
    """Random values do not compress, so the file is larger than the limit DuckDB works within."""
    data = tmp_path / "data"
    data.mkdir()
    rows = 1_000_000
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT lpad(CAST(i % 450000 AS VARCHAR), 8, '0') AS kvk_nummer,
                  ['RTM', 'AMS', 'VLI', 'MOE'][1 + i % 4] AS haven,
                  'drugs' AS goederen, 2022 AS jaar, 'N' AS geinspecteerd,
                  random() * 1000 AS waarde_eur, random() AS ruis1, random() AS ruis2,
                  DATE '2022-01-01' AS datum
                FROM range({rows}) t(i)) TO '{data / "declarations.parquet"}' (FORMAT parquet)"""
    )
    con.close()
    size = (data / "declarations.parquet").stat().st_size
    assert size > byte_size("24MB")
    path = customs.write_csv_node(tmp_path, customs.local_frame().head(1))
    raw = tomllib.loads(path.read_text())
    raw["datasets"][0]["source"] = {
        "kind": "parquet",
        "path": "data/declarations.parquet",
        "memory_limit": "24MB",
    }
    raw["node"]["duckdb_threads"] = 1
    raw["node"]["parquet_convert_below"] = "0"  # read in place, as a file past the threshold is
    path.write_text(tomli_w.dumps(raw))
    config = load_node_config(path)
    sources = DataSources(config)
    try:
        ((limit,),) = sources.fetch(
            config.datasets["declarations"], "SELECT current_setting('memory_limit')", []
        )
        assert byte_size(limit) <= byte_size("24MB")
        got = dict((row[0], row[1]) for row in _answer(sources, config, customs))
    finally:
        sources.close()
    assert sum(got.values()) == rows


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("node", "duckdb_memory_limit", "lots", "duckdb_memory_limit must be a size"),
        ("node", "duckdb_memory_limit", 1024, "duckdb_memory_limit must be a"),
        ("node", "duckdb_threads", -1, "duckdb_threads must be 0"),
        ("node", "source_check_seconds", -2.0, "source_check_seconds must be 0"),
        ("node", "parquet_convert_below", "small", "parquet_convert_below must be a size"),
        ("source", "memory_limit", "1 gallon", "memory_limit must be a size"),
        ("source", "memroy_limit", "1GB", "unknown key 'memroy_limit'"),
    ],
)
def test_duckdb_settings_are_checked(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any, where: str, key: str, value: Any, message: str
) -> None:
    path = customs.write_csv_node(tmp_path, declarations.head(5))
    raw = tomllib.loads(path.read_text())
    (raw["node"] if where == "node" else raw["datasets"][0]["source"])[key] = value
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_node_config(path)


def test_duckdb_settings_reach_the_engine(tmp_path: Path, declarations: pd.DataFrame, customs: Any) -> None:
    config = _node(tmp_path, declarations, customs, "csv", duckdb_memory_limit="100MB", duckdb_threads=1)
    assert byte_size("2GiB") == 2 * 1024**3
    sources = DataSources(config)
    try:
        dataset = config.datasets["declarations"]
        ((limit, threads, spill),) = sources.fetch(
            dataset,
            "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')",
            [],
        )
    finally:
        sources.close()
    assert byte_size(limit) <= byte_size("100MB") and int(threads) == 1
    assert Path(spill).is_relative_to(config.state_dir)


def test_reload_without_a_running_node_says_so(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    from nodes.source_reload import REQUEST_FILE, request_reload

    config = _node(tmp_path, declarations.head(20), customs)
    with pytest.raises(FederationError) as refused:
        request_reload(config, timeout=1.0)
    assert refused.value.rule == "node_not_running"
    assert not (config.state_dir / REQUEST_FILE).exists()


def test_a_file_that_fails_to_load_is_reported_once(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any
) -> None:
    config = _node(tmp_path, declarations, customs, "parquet")
    sources = DataSources(config)
    path = tmp_path / "data" / "declarations.parquet"
    try:
        old = _answer(sources, config, customs)
        broken = tmp_path / "data" / "broken.parquet"
        broken.write_bytes(b"PAR1 but not really")
        os.replace(broken, path)
        reports = [sources.refresh() for _ in range(5)]
        assert [bool(r.failed) for r in reports] == [False, True, False, False, False]
        assert sources.refresh(force=True).failed  # a reload tries, and says, again
        assert _answer(sources, config, customs) == old
        _replace(path, declarations.head(50))
        assert sources.refresh(force=True).reloaded == {"declarations": 50}
        # Left-overs of earlier versions are removed at the next start.
        stray = config.state_dir / SOURCES_DIR / "declarations-0123456789abcdef.duckdb"
        stray.write_bytes(b"")
    finally:
        sources.close()
    DataSources(config).close()
    assert not stray.exists()


@pytest.mark.parametrize("kind", WAYS)
def test_node_check_reuses_the_counts_of_a_loaded_version(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any, kind: str
) -> None:
    from nodes.check import check_sources

    config = _node(tmp_path, declarations, customs, kind)
    scanned = check_sources(config)
    DataSources(config).close()
    assert list((config.state_dir / SOURCES_DIR).glob("*.json"))
    # Same findings (rows, unmapped values per column) without scanning the file again.
    assert check_sources(config) == scanned
    assert any(f.rule == "unmapped_values" for f in scanned)
    # ... read from what the node kept, not from another scan:
    (kept,) = (config.state_dir / SOURCES_DIR).glob("*.json")
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "rows": 123456789}))
    assert any("123456789 rows" in f.message for f in check_sources(config))


# Queries on mapped columns, with the group column and the rows they keep, written for pandas over
# the mapped values (NaN where a code maps to nothing: such a row passes no test on that column).
MAPPED_QUERIES: list[tuple[str, str, Callable[[pd.DataFrame], pd.Series]]] = [
    (
        "SELECT port, COUNT(*) FROM declarations WHERE port IN ('Rotterdam', 'Moerdijk') "
        "AND inspected = 1 GROUP BY port",
        "port",
        lambda r: r["port"].isin(["Rotterdam", "Moerdijk"]) & (r["inspected"] == 1),
    ),
    (
        "SELECT inspected, COUNT(*) FROM declarations WHERE NOT port = 'Amsterdam' GROUP BY inspected",
        "inspected",
        lambda r: r["port"].notna() & (r["port"] != "Amsterdam"),
    ),
    (
        "SELECT port, COUNT(*) FROM declarations WHERE port <> 'Rotterdam' OR inspected = 0 GROUP BY port",
        "port",
        lambda r: (r["port"].notna() & (r["port"] != "Rotterdam")) | (r["inspected"] == 0),
    ),
]


@pytest.mark.parametrize("kind", WAYS)
def test_codes_mapped_many_to_one_filter_and_group_as_pandas_does(
    tmp_path: Path, declarations: pd.DataFrame, customs: Any, kind: str
) -> None:
    """Filters and groups on mapped columns, with two local codes for one shared value (RTM and
    R'DM, whose quote the view's literals must survive) and codes that map to nothing (port ANT,
    flag '?'), answer as pandas over the mapped rows whichever way the file is served; over Parquet
    read in place the view maps each code with one lookup, not a CASE per value (the cost measured
    in docs/benchmarks.md)."""
    ports = {**customs.PORT_CODES, "R'DM": "Rotterdam"}
    frame = declarations.copy()
    frame.loc[frame.index[frame["haven"] == "RTM"][::2], "haven"] = "R'DM"
    _node(tmp_path, frame, customs, kind)
    path = tmp_path / "node.toml"
    raw = tomllib.loads(path.read_text())
    (port,) = [c for c in raw["datasets"][0]["columns"] if c["name"] == "port"]
    port["codes"] = ports
    raw["datasets"][0]["max_rows_per_unit"] = 100  # nothing truncated: pandas need not rank rows
    path.write_text(tomli_w.dumps(raw))
    config = load_node_config(path)
    mapped = frame[frame["kvk_nummer"].notna()].assign(
        port=frame["haven"].map(ports), inspected=frame["geinspecteerd"].map(customs.FLAG_CODES)
    )
    sources = DataSources(config)
    try:
        for sql, key, keep in MAPPED_QUERIES:
            plan = customs.plan_for(sql, config)
            assert not sources.needs_truncation(plan)
            got = sorted(((row[0], row[1], row[2]) for row in sources.run(plan)), key=str)
            rows = mapped[keep(mapped) & mapped[key].notna()]
            counts = rows.groupby(key)["kvk_nummer"].agg(["size", "nunique"])
            assert got == sorted(((k, int(n), int(u)) for k, (n, u) in counts.iterrows()), key=str), sql
        # Rows whose code maps to nothing fall in no group, and are counted for the operator.
        assert sources.unmapped(customs.plan_for(MAPPED_QUERIES[0][0], config)) == {
            "port": int((frame["haven"] == "ANT").sum()),
            "inspected": int((frame["geinspecteerd"] == "?").sum()),
        }
        if kind == "parquet-in-place":
            ((view,),) = sources.fetch(
                config.datasets["declarations"],
                "SELECT sql FROM duckdb_views() WHERE view_name = ?",
                ["ds_declarations"],
            )
            assert "list_position" in view and "CASE" not in view.upper()
    finally:
        sources.close()
