"""metrics_listen in node and coordinator configs: off by default, loopback only, a string."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import load_coordinator_config
from nodes.config import load_node_config
from protocols.errors import ConfigError
from protocols.metrics_http import loopback_address
from tests.unit.test_config import DATASET, HEAD


def _node(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(HEAD.replace("[node]\n", f"[node]\n{line}\n", 1) + DATASET)
    return path


def test_metrics_are_off_unless_configured(tmp_path: Path) -> None:
    assert load_node_config(_node(tmp_path, "")).metrics_listen == ""
    (tmp_path / "c.toml").write_text("[coordinator]\ninsecure = true\n")
    assert load_coordinator_config(tmp_path / "c.toml").metrics_listen == ""


def test_loopback_listen_is_kept(tmp_path: Path) -> None:
    assert (
        load_node_config(_node(tmp_path, 'metrics_listen = "127.0.0.1:9101"')).metrics_listen
        == "127.0.0.1:9101"
    )
    (tmp_path / "c.toml").write_text('[coordinator]\nmetrics_listen = "[::1]:9100"\n')
    assert load_coordinator_config(tmp_path / "c.toml").metrics_listen == "[::1]:9100"


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9101", "10.0.0.5:9101", "metrics.example:9101", "127.0.0.1", "127.0.0.1:0"]
)
def test_a_listen_off_loopback_or_malformed_is_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] metrics_listen"):
        load_node_config(_node(tmp_path, f'metrics_listen = "{listen}"'))
    (tmp_path / "c.toml").write_text(f'[coordinator]\nmetrics_listen = "{listen}"\n')
    with pytest.raises(ConfigError, match=r"\[coordinator\] metrics_listen"):
        load_coordinator_config(tmp_path / "c.toml")


def test_a_port_number_is_refused_as_a_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_node_config(_node(tmp_path, "metrics_listen = 9101"))


def test_loopback_address_parts() -> None:
    assert loopback_address("localhost:9101", "[node]") == ("localhost", 9101)
    assert loopback_address("[::1]:9101", "[node]") == ("::1", 9101)
