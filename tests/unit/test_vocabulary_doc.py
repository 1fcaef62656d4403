"""docs/vocabulary.md is printed from the one source the scenario's data and configs come from."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from federation.cli import app
from federation.scenario import DATASETS, DOMAINS, generate, node_configs
from federation.scenario.vocabulary_doc import COMMAND, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_vocabulary_doc_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "vocabulary.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/vocabulary.md is stale; run: {COMMAND}"


def test_module_prints_the_doc() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "federation.scenario.vocabulary_doc"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert run.stdout == render()


def test_cli_prints_the_doc() -> None:
    result = CliRunner().invoke(app, ["vocabulary"])
    assert result.exit_code == 0 and result.output == render()


def test_every_category_column_uses_a_documented_domain() -> None:
    documented = {values for values, _ in DOMAINS.values()}
    for spec in DATASETS:
        for col in spec.columns:
            if col.kind == "category":
                assert col.domain in documented, f"{spec.key}.{col.name} has an undocumented domain"
                assert f"| `{col.name}` | category | domain [" in render()


def test_demo_configs_declare_the_documented_domains() -> None:
    scenario = generate(7, 1000, datasets=["douane.declarations", "kmar.crossings"])
    configs = {name: tomllib.loads(text) for name, text in node_configs(scenario).items()}
    declared = {
        tuple(col["domain"])
        for node in ("douane", "kmar")
        for dataset in configs[node]["datasets"]
        for col in dataset["columns"]
        if col["kind"] == "category"
    }
    assert declared and declared <= {values for values, _ in DOMAINS.values()}
    frame = scenario.frames["kmar.crossings"]
    assert set(frame["airport"]) <= set(DOMAINS["airport"][0])
