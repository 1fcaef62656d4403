"""Budget policy in the node config: require_budget (on unless set) and the dataset cap, per node
and per dataset, reach the ledger the node opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.config import load_node_config
from nodes.context import open_ledger
from privacy.accounting import Cost
from privacy.ledger import BudgetMissing, DatasetBudgetExceeded
from protocols.errors import ConfigError
from tests.unit.test_config import DATASET, HEAD


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_node_config(path)


def test_a_grant_is_required_unless_the_policy_says_otherwise(tmp_path: Path) -> None:
    config = _load(tmp_path, HEAD + DATASET)
    assert config.policy.require_budget is True
    assert config.datasets["declarations"].policy.dataset_budget_epsilon == 10.0
    with pytest.raises(BudgetMissing) as info:
        open_ledger(config).charge("j", "declarations", "p", Cost(1.0, 0.5))
    assert info.value.rule == "budget_not_granted" and info.value.node == "douane"


def test_node_and_dataset_policies_reach_the_ledger(tmp_path: Path) -> None:
    text = HEAD.replace("[policy]\n", "[policy]\nrequire_budget = false\ndataset_budget_epsilon = 3.0\n")
    text += DATASET.replace("[datasets.policy]\n", "[datasets.policy]\ndataset_budget_epsilon = 1.5\n")
    ledger = open_ledger(_load(tmp_path, text))
    ledger.charge("a", "declarations", "p", Cost(1.0, 0.5))
    with pytest.raises(DatasetBudgetExceeded):  # the dataset's own cap, 1.5, not the node's 3
        ledger.charge("b", "declarations", "q", Cost(1.0, 0.5))
    assert ledger.cap("declarations").total_epsilon == 1.5
    assert ledger.policy("other").cap_epsilon == 3.0 and not ledger.policy("other").require_budget


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('require_budget = "no"', "require_budget"),
        ("require_budget = 0", "require_budget"),
        ("dataset_budget_epsilon = -1.0", "dataset_budget_epsilon"),
        ('dataset_budget_epsilon = "ten"', "dataset_budget_epsilon"),
    ],
)
def test_bad_budget_keys_are_refused_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, HEAD.replace("[policy]\n", f"[policy]\n{line}\n") + DATASET)
    assert key in info.value.message
