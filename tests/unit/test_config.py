"""Node config: TOML -> NodeConfig, and a clear ConfigError for every inconsistency (docs/config.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodes.config import OPERATIONS, load_node_config
from protocols.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

HEAD = """
[node]
id = "douane"
coordinator = "10.0.0.5:7100"
state_dir = "state/douane"
heartbeat_seconds = 2

[policy]
min_group_size = 5
operations = ["count", "count_distinct", "sum"]
max_groups = 100
"""

DATASET = """
[[datasets]]
name = "declarations"
description = "Customs declarations"
controller = "Douane"
privacy_unit = "company"
max_rows_per_unit = 20

[datasets.source]
kind = "csv"
path = "data/declarations.csv"

[datasets.policy]
min_group_size = 8

[[datasets.columns]]
name = "port"
local = "haven"
kind = "category"
domain = ["Rotterdam", "Amsterdam"]
codes = { RTM = "Rotterdam", AMS = "Amsterdam", "R-2" = "Rotterdam" }

[[datasets.columns]]
name = "year"
kind = "category"
domain = [2021, 2022]

[[datasets.columns]]
name = "value"
local = "waarde_eur"
kind = "numeric"
bounds = [0, 2000000]

[[datasets.columns]]
name = "date"
kind = "date"

[[datasets.columns]]
name = "company"
local = "kvk_nummer"
kind = "identifier"
id_type = "kvk"
"""


def write(folder: Path, text: str, name: str = "node.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def config_error(folder: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_node_config(write(folder, text))
    message = info.value.message
    assert message and "\n" not in message
    return info.value


def test_valid_config_loads(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = load_node_config(write(tmp_path / "conf", HEAD + DATASET))
    assert config.node_id == "douane"
    assert config.coordinator == "10.0.0.5:7100"
    assert config.heartbeat_seconds == 2.0
    assert config.path == (tmp_path / "conf" / "node.toml").resolve()
    assert config.policy.min_group_size == 5
    assert config.policy.operations == ("count", "count_distinct", "sum")

    ds = config.datasets["declarations"]
    assert (ds.description, ds.controller, ds.exposed) == ("Customs declarations", "Douane", True)
    assert ds.privacy_unit == "company"
    assert ds.max_rows_per_unit == 20
    # The dataset overrides one policy key and inherits the others from [policy].
    assert ds.policy.min_group_size == 8
    assert ds.policy.operations == ("count", "count_distinct", "sum")
    assert ds.policy.max_groups == 100

    port = ds.columns["port"]
    assert (port.local, port.kind, port.domain) == ("haven", "category", ("Rotterdam", "Amsterdam"))
    assert port.codes == {"RTM": "Rotterdam", "AMS": "Amsterdam", "R-2": "Rotterdam"}
    assert port.local_codes_for("Rotterdam") == ["RTM", "R-2"]
    year = ds.columns["year"]
    assert (year.local, year.domain, year.codes) == ("year", (2021, 2022), {})
    assert year.local_codes_for(2021) == [2021]
    assert ds.columns["value"].bounds == (0.0, 2000000.0)
    assert ds.columns["date"].kind == "date"
    company = ds.columns["company"]
    assert (company.kind, company.id_type, company.local) == ("identifier", "kvk", "kvk_nummer")


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "node"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_node_config(write(folder, HEAD + DATASET))
    assert config.datasets["declarations"].source.path == folder.resolve() / "data" / "declarations.csv"
    assert config.state_dir == folder.resolve() / "state" / "douane"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "abs" / "d.csv"
    text = (HEAD + DATASET).replace('"data/declarations.csv"', f'"{data}"')
    text = text.replace('state_dir = "state/douane"', f'state_dir = "{tmp_path / "st"}"')
    config = load_node_config(write(tmp_path, text))
    assert config.datasets["declarations"].source.path == data
    assert config.state_dir == tmp_path / "st"


def test_defaults(tmp_path: Path) -> None:
    text = """
[node]
id = "kmar"

[[datasets]]
name = "crossings"
privacy_unit = "person"
[datasets.source]
kind = "parquet"
path = "c.parquet"
[[datasets.columns]]
name = "person"
kind = "identifier"
"""
    config = load_node_config(write(tmp_path, text))
    assert config.coordinator == "127.0.0.1:7100"
    assert config.state_dir == tmp_path.resolve() / "state" / "kmar"
    assert config.policy.min_group_size == 10
    assert config.policy.operations == OPERATIONS
    ds = config.datasets["crossings"]
    assert ds.max_rows_per_unit == 1
    assert ds.exposed is True
    assert ds.source.kind == "parquet"
    assert ds.columns["person"].id_type == "text"


def test_postgres_source(tmp_path: Path) -> None:
    source = '[datasets.source]\nkind = "postgres"\ndsn = "postgresql://u@db/x"\ntable = "douane.aangiften"\n'
    text = re.sub(r"\[datasets\.source\]\n[^\[]*", source + "\n", HEAD + DATASET)
    ds = load_node_config(write(tmp_path, text)).datasets["declarations"]
    assert (ds.source.kind, ds.source.dsn, ds.source.table, ds.source.path) == (
        "postgres",
        "postgresql://u@db/x",
        "douane.aangiften",
        None,
    )


def test_unexposed_dataset_is_loaded_as_unexposed(tmp_path: Path) -> None:
    text = (HEAD + DATASET).replace('privacy_unit = "company"', 'privacy_unit = "company"\nexposed = false')
    assert load_node_config(write(tmp_path, text)).datasets["declarations"].exposed is False


def test_the_documented_example_loads(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "config.md").read_text()
    example = re.search(r"## Node config \(TOML\)\s*```toml\n(.*?)```", docs, re.S)
    assert example is not None, "docs/config.md lost its node config example"
    config = load_node_config(write(tmp_path, example.group(1)))
    ds = config.datasets["declarations"]
    assert ds.columns["port"].codes["RTM"] == "Rotterdam"
    assert ds.source.path == tmp_path.resolve() / "data" / "douane" / "declarations.csv"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('privacy_unit = "company"\n', "", ["declarations", "privacy_unit"]),
        ('privacy_unit = "company"', 'privacy_unit = "port"', ["privacy_unit", "port", "identifier"]),
        ('privacy_unit = "company"', 'privacy_unit = "person"', ["privacy_unit", "person"]),
        ('kind = "date"', 'kind = "timestamp"', ["date", "kind", "category"]),
        ('kind = "csv"', 'kind = "excel"', ["source", "kind", "csv"]),
        ('AMS = "Amsterdam", ', 'AMS = "Antwerpen", ', ["port", "outside the domain", "Antwerpen"]),
        ("bounds = [0, 2000000]", "bounds = [10, 10]", ["value", "bounds", "lower < upper"]),
        ("bounds = [0, 2000000]", "bounds = [5, -5]", ["value", "bounds"]),
        ("bounds = [0, 2000000]\n", "", ["value", "bounds"]),
        ('domain = ["Rotterdam", "Amsterdam"]', "domain = []", ["port", "domain"]),
        ("domain = [2021, 2022]\n", "", ["year", "domain"]),
        ('id_type = "kvk"', 'id_type = "bsn"', ["company", "id_type"]),
        ("max_rows_per_unit = 20", "max_rows_per_unit = 0", ["declarations", "max_rows_per_unit"]),
        (
            "[datasets.policy]\nmin_group_size = 8",
            "[datasets.policy]\nmin_size = 8",
            ["declarations", "min_size"],
        ),
        ("max_groups = 100", "max_groups = 100\nthreshold = 3", ["[policy]", "threshold"]),
        ('operations = ["count", "count_distinct", "sum"]', 'operations = ["count", "median"]', ["median"]),
        ("min_group_size = 5", "min_group_size = 0", ["min_group_size"]),
        ("max_groups = 100", 'max_groups = 100\nrelease = "broadcast"', ["release"]),
        ('id = "douane"', 'id = "dou ane/../x"', ["[node]", "dou ane"]),
        ('id = "douane"\n', "", ["[node]", "id"]),
        ('path = "data/declarations.csv"\n', "", ["source", "path"]),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, old: str, new: str, words: list[str]) -> None:
    text = HEAD + DATASET
    assert old in text
    error = config_error(tmp_path, text.replace(old, new, 1))
    assert error.rule == "config"
    for word in words:
        assert word in error.message, error.message


def test_duplicate_dataset(tmp_path: Path) -> None:
    error = config_error(tmp_path, HEAD + DATASET + DATASET)
    assert "duplicate dataset" in error.message


def test_duplicate_column(tmp_path: Path) -> None:
    text = HEAD + DATASET + '\n[[datasets.columns]]\nname = "date"\nkind = "date"\n'
    error = config_error(tmp_path, text)
    assert "declarations" in error.message and "duplicate column" in error.message


def test_postgres_source_needs_a_table(tmp_path: Path) -> None:
    source = '[datasets.source]\nkind = "postgres"\ndsn = "postgresql://u@db/x"\n'
    text = re.sub(r"\[datasets\.source\]\n[^\[]*", source + "\n", HEAD + DATASET)
    assert "table" in config_error(tmp_path, text).message


def test_missing_node_table(tmp_path: Path) -> None:
    assert "'node'" in config_error(tmp_path, DATASET).message


def test_missing_file_has_its_own_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_node_config(tmp_path / "absent.toml")
    assert info.value.rule == "config_missing"
    assert "absent.toml" in info.value.message


def test_invalid_toml(tmp_path: Path) -> None:
    error = config_error(tmp_path, HEAD + "[[datasets]\nname = ")
    assert "not valid TOML" in error.message


# Each of these values has the wrong type. The loader should answer with a ConfigError that names
# the key, not crash with a ValueError/TypeError, or silently reinterpret the value.
WRONG_TYPES = [
    ("bounds = [0, 2000000]", "bounds = [5]", "bounds"),
    ("bounds = [0, 2000000]", 'bounds = ["low", "high"]', "bounds"),
    ("bounds = [0, 2000000]", "bounds = 7", "bounds"),
    ("bounds = [0, 2000000]", 'bounds = [0, "inf"]', "bounds"),
    ("max_rows_per_unit = 20", 'max_rows_per_unit = "many"', "max_rows_per_unit"),
    ("min_group_size = 5", 'min_group_size = "five"', "min_group_size"),
    ("domain = [2021, 2022]", "domain = 2021", "domain"),
    ("domain = [2021, 2022]", 'domain = "2021"', "domain"),
    ('domain = ["Rotterdam", "Amsterdam"]', 'domain = ["Rotterdam", "Amsterdam", "Rotterdam"]', "domain"),
    ("max_groups = 100", "max_groups = 0", "max_groups"),
]


@pytest.mark.parametrize(("old", "new", "key"), WRONG_TYPES, ids=[w[1] for w in WRONG_TYPES])
def test_wrong_types_give_config_error(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = HEAD + DATASET
    assert old in text
    error = config_error(tmp_path, text.replace(old, new, 1))
    assert key in error.message


def test_audit_signing_key_path(tmp_path: Path) -> None:
    default = load_node_config(write(tmp_path, HEAD + DATASET))
    assert default.audit_key_path == tmp_path.resolve() / "state" / "douane" / "audit_signing.key"
    moved = HEAD.replace("[node]\n", '[node]\naudit_signing_key = "keys/douane-audit.key"\n', 1)
    config = load_node_config(write(tmp_path, moved + DATASET))
    assert config.audit_key_path == tmp_path.resolve() / "keys" / "douane-audit.key"
    bad = HEAD.replace("[node]\n", "[node]\naudit_signing_key = 7\n", 1)
    assert "audit_signing_key" in config_error(tmp_path, bad + DATASET).message
