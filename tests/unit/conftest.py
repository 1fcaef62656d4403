"""Fixtures for the query-path tests: one customs dataset, its node config, and its sources.

The same local data is served from a CSV file (DuckDB) and from a PostgreSQL table, so the
tests can check that both engines give the same answer and that it matches pandas.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from federation.query import parse_query
from nodes.config import NodeConfig, load_node_config
from nodes.sources import DataSources
from nodes.validate import Plan, validate

NODE_ID = "douane"
MAX_ROWS = 3
INJECTION = "x' OR 1=1 --"

PORT_CODES = {"RTM": "Rotterdam", "AMS": "Amsterdam", "VLI": "Vlissingen", "MOE": "Moerdijk"}
PORT_DOMAIN = ["Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk"]
GOODS_DOMAIN = ["drugs", "precursors", "tobacco", INJECTION]
YEAR_DOMAIN = [2021, 2022, 2023]
FLAG_CODES = {"J": 1, "N": 0}
BOUNDS = (0.0, 1000.0)

# Local column names and types, as a partner's own system would have them.
LOCAL_TYPES = {
    "kvk_nummer": "TEXT",
    "haven": "TEXT",
    "goederen": "TEXT",
    "jaar": "INTEGER",
    "geinspecteerd": "TEXT",
    "waarde_eur": "DOUBLE PRECISION",
    "datum": "DATE",
}


def toml_text(source: str, policy: str = "", dataset_policy: str = "", exposed: bool = True) -> str:
    """The customs node's config, with the given ``[datasets.source]`` body and policy lines."""
    port_codes = ", ".join(f'{k} = "{v}"' for k, v in PORT_CODES.items())
    flag_codes = ", ".join(f"{k} = {v}" for k, v in FLAG_CODES.items())
    goods = ", ".join(f'"{g}"' for g in GOODS_DOMAIN)
    ports = ", ".join(f'"{p}"' for p in PORT_DOMAIN)
    return f"""
[node]
id = "{NODE_ID}"
state_dir = "state"

[policy]
min_group_size = 2
{policy}

[[datasets]]
name = "declarations"
description = "Customs declarations"
controller = "Douane"
exposed = {str(exposed).lower()}
privacy_unit = "company"
max_rows_per_unit = {MAX_ROWS}

[datasets.source]
{source}

[datasets.policy]
{dataset_policy}

[[datasets.columns]]
name = "company"
local = "kvk_nummer"
kind = "identifier"
id_type = "kvk"

[[datasets.columns]]
name = "port"
local = "haven"
kind = "category"
domain = [{ports}]
codes = {{ {port_codes} }}

[[datasets.columns]]
name = "goods"
local = "goederen"
kind = "category"
domain = [{goods}]

[[datasets.columns]]
name = "year"
local = "jaar"
kind = "category"
domain = {YEAR_DOMAIN}

[[datasets.columns]]
name = "inspected"
local = "geinspecteerd"
kind = "category"
domain = [0, 1]
codes = {{ {flag_codes} }}

[[datasets.columns]]
name = "value"
local = "waarde_eur"
kind = "numeric"
bounds = [{BOUNDS[0]}, {BOUNDS[1]}]

[[datasets.columns]]
name = "date"
local = "datum"
kind = "date"
range = ["2021-01-01", "2023-12-31"]
"""


def local_frame() -> pd.DataFrame:
    """Deterministic local data with the awkward cases the release path must handle.

    * port code ANT, flag code '?', goods 'other' and year 2019 lie outside the public domain;
    * three rows have no privacy unit;
    * values below and above the declared bounds;
    * unit 99999999 has 9 rows, three times ``max_rows_per_unit``, spread over several groups.
    """
    rng = random.Random(20240611)
    ports = [*PORT_CODES, "ANT"]
    goods = [*GOODS_DOMAIN, "other"]
    rows = []
    for i in range(160):
        unit = f"{10000000 + rng.randrange(45):08d}"
        rows.append(
            {
                "kvk_nummer": unit,
                "haven": rng.choice(ports),
                "goederen": rng.choice(goods),
                "jaar": rng.choice([2019, 2021, 2022, 2023]),
                "geinspecteerd": rng.choice(["J", "N", "N", "?"]),
                "waarde_eur": float(rng.choice([-50, 0, 12.5, 250, 999.5, 1000, 4000]) + i % 7),
                "datum": f"{rng.choice([2021, 2022, 2023])}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            }
        )
    for i in range(9):
        rows.append(
            {
                "kvk_nummer": "99999999",
                "haven": ["RTM", "AMS", "MOE"][i % 3],
                "goederen": GOODS_DOMAIN[i % 4],
                "jaar": [2021, 2022, 2023][i % 3],
                "geinspecteerd": ["J", "N"][i % 2],
                "waarde_eur": [5000.0, 300.0, 20.0][i % 3],
                "datum": f"2022-0{1 + i % 9}-15",
            }
        )
    for _ in range(3):
        rows.append(
            {
                "kvk_nummer": None,
                "haven": "RTM",
                "goederen": "drugs",
                "jaar": 2022,
                "geinspecteerd": "J",
                "waarde_eur": 100.0,
                "datum": "2022-03-03",
            }
        )
    frame = pd.DataFrame(rows)
    frame["jaar"] = frame["jaar"].astype("int64")
    return frame


def write_csv_node(folder: Path, frame: pd.DataFrame, **toml_args: object) -> Path:
    """Write ``frame`` as CSV and a config next to it (relative source path); return the config path."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data / "declarations.csv", index=False)
    config = folder / "node.toml"
    config.write_text(toml_text('kind = "csv"\npath = "data/declarations.csv"', **toml_args))  # type: ignore[arg-type]
    return config


def plan_for(sql: str, config: NodeConfig) -> Plan:
    return validate(parse_query(sql), config)


class Customs:
    """The customs dataset's constants and helpers, handed to tests by the ``customs`` fixture."""

    NODE_ID = NODE_ID
    MAX_ROWS = MAX_ROWS
    INJECTION = INJECTION
    PORT_CODES = PORT_CODES
    PORT_DOMAIN = PORT_DOMAIN
    GOODS_DOMAIN = GOODS_DOMAIN
    YEAR_DOMAIN = YEAR_DOMAIN
    FLAG_CODES = FLAG_CODES
    BOUNDS = BOUNDS
    LOCAL_TYPES = LOCAL_TYPES
    toml_text = staticmethod(toml_text)
    local_frame = staticmethod(local_frame)
    write_csv_node = staticmethod(write_csv_node)
    plan_for = staticmethod(plan_for)

    @staticmethod
    def config_with(folder: Path, **toml_args: object) -> NodeConfig:
        """A customs node config over the (not necessarily existing) CSV, with policy changes."""
        path = folder / "node.toml"
        path.write_text(toml_text('kind = "csv"\npath = "data/declarations.csv"', **toml_args))  # type: ignore[arg-type]
        return load_node_config(path)


@pytest.fixture(scope="session")
def customs() -> type[Customs]:
    return Customs


@pytest.fixture(scope="session")
def declarations() -> pd.DataFrame:
    return local_frame()


@pytest.fixture(scope="session")
def node_config(tmp_path_factory: pytest.TempPathFactory, declarations: pd.DataFrame) -> NodeConfig:
    """The customs node config over a CSV file, loaded from TOML like the daemon does."""
    return load_node_config(write_csv_node(tmp_path_factory.mktemp("douane"), declarations))


@pytest.fixture(scope="session")
def duck_sources(node_config: NodeConfig) -> Iterator[DataSources]:
    sources = DataSources(node_config)
    yield sources
    sources.close()


@pytest.fixture(scope="session")
def pg_table(postgres_dsn: str, declarations: pd.DataFrame) -> Iterator[str]:
    """The same local data in a PostgreSQL table inside a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"fedtest_{uuid.uuid4().hex[:12]}"
    table = f"{schema}.aangiften"
    columns = ", ".join(f"{name} {kind}" for name, kind in LOCAL_TYPES.items())
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(f"CREATE TABLE {table} ({columns})")
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(LOCAL_TYPES)}) FROM STDIN") as copy,
            ):
                for row in declarations.itertuples(index=False):
                    copy.write_row([None if pd.isna(v) else v for v in row])
            yield table
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def pg_sources(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, pg_table: str
) -> Iterator[DataSources]:
    folder = tmp_path_factory.mktemp("douane_pg")
    path = folder / "node.toml"
    path.write_text(toml_text(f'kind = "postgres"\ndsn = "{postgres_dsn}"\ntable = "{pg_table}"'))
    sources = DataSources(load_node_config(path))
    yield sources
    sources.close()
