"""Strict config: wrong types and unknown keys are refused with the key named, in every table of
node and coordinator configs; the demo configs and every test config still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import load_coordinator_config
from federation.scenario import write_scenario
from nodes.config import load_node_config
from protocols.errors import ConfigError
from tests.unit.test_config import DATASET, HEAD


def _node_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert "\n" not in info.value.message
    return info.value.message


def _coordinator_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_coordinator_config(path)
    return info.value.message


def test_text_false_does_not_expose_a_dataset(tmp_path: Path) -> None:
    text = HEAD + DATASET.replace('controller = "Douane"\n', 'controller = "Douane"\nexposed = "false"\n')
    message = _node_error(tmp_path, text)
    assert "exposed" in message and "dataset declarations" in message


def test_text_no_does_not_turn_tls_off(tmp_path: Path) -> None:
    for table, load in (("[node]", _node_error), ("[coordinator]", _coordinator_error)):
        text = HEAD + DATASET if table == "[node]" else '[coordinator]\nlisten = "127.0.0.1:7100"\n'
        text = text.replace(f"{table}\n", f'{table}\ninsecure = "no"\n', 1)
        message = load(tmp_path, text)
        assert "insecure" in message and table in message


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    message = _coordinator_error(tmp_path, "[coordinator]\nnode_timout_seconds = 30\n")
    assert "unknown key 'node_timout_seconds'" in message and "[coordinator]" in message
    message = _node_error(tmp_path, HEAD.replace("heartbeat_seconds", "heartbeat_second") + DATASET)
    assert "unknown key 'heartbeat_second'" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("[node]\n", "[nodes]\nid = 1\n[node]\n", "nodes"),  # unknown top-level table
        ('id = "douane"\n', "id = 7\n", "id"),
        ("heartbeat_seconds = 2\n", 'heartbeat_seconds = "2"\n', "heartbeat_seconds"),
        ("heartbeat_seconds = 2\n", "heartbeat_seconds = nan\n", "heartbeat_seconds"),
        ("heartbeat_seconds = 2\n", "heartbeat_seconds = -1\n", "heartbeat_seconds"),
        ("min_group_size = 5\n", "min_group_size = 5.0\n", "min_group_size"),
        ("max_groups = 100\n", "max_groups = 100\ndp_requried = false\n", "dp_requried"),
        ("max_groups = 100\n", 'max_groups = 100\ndp_required = "false"\n', "dp_required"),
        ("max_groups = 100\n", "max_groups = 100\ndefault_epsilon = inf\n", "default_epsilon"),
        ("min_group_size = 8\n", 'min_group_size = 8\noverlap_columns = "company"\n', "overlap_columns"),
        ("max_rows_per_unit = 20\n", 'max_rows_per_unit = "20"\n', "max_rows_per_unit"),
        ('privacy_unit = "company"\n', 'privacy_unit = "company"\nprivacy_units = 1\n', "privacy_units"),
        ('kind = "csv"\n', 'kind = "csv"\nsheet = "x"\n', "sheet"),
        ('path = "data/declarations.csv"\n', "path = 3\n", "path"),
        ('local = "haven"\n', 'local = "haven"\nlabel = "x"\n', "label"),
        ("bounds = [0, 2000000]\n", 'bounds = [0, "2000000"]\n', "bounds"),
        ('id_type = "kvk"\n', "id_type = true\n", "id_type"),
        ("domain = [2021, 2022]\n", "domain = [2021, true]\n", "domain"),
    ],
)
def test_every_node_table_is_strict(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = HEAD + DATASET
    assert old in text
    message = _node_error(tmp_path, text.replace(old, new, 1))
    assert key in message, message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("listen = 7100", "listen"),
        ("heartbeat_seconds = true", "heartbeat_seconds"),
        ("node_timeout_seconds = 0", "node_timeout_seconds"),
        ("max_message_bytes = 1.5", "max_message_bytes"),
        ("max_queries_per_minute = 1e3", "max_queries_per_minute"),
        ('state_dir = ["a"]', "state_dir"),
    ],
)
def test_every_coordinator_key_is_typed(tmp_path: Path, line: str, key: str) -> None:
    message = _coordinator_error(tmp_path, f"[coordinator]\n{line}\n")
    assert key in message, message
    message = _coordinator_error(tmp_path, "[coordinator]\n[extra]\nx = 1\n")
    assert "unknown key 'extra'" in message


def test_demo_configs_load(tmp_path: Path) -> None:
    paths = write_scenario(tmp_path, seed=3, rows=1000, postgres_dsn=None)
    load_coordinator_config(paths["coordinator"])
    for name, path in paths.items():
        if name != "coordinator" and path.suffix == ".toml":
            load_node_config(path)
