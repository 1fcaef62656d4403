"""A federation of three real node processes serving a synthetic "loans" dataset for model tests.

Each node holds its own rows as CSV; the pooled rows are kept here so tests can fit the same
model with statsmodels and compare. One privacy unit per row (max_rows_per_unit = 1).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

from tests.integration.conftest import RunningFederation, start_federation

NODES = ["douane", "kmar", "politie"]
LEVELS = ["a", "b", "c"]


def loans(node_index: int, rows: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed * 100 + node_index)
    x1 = rng.uniform(0, 100, rows)
    x2 = rng.uniform(-5, 5, rows)
    g = rng.choice(LEVELS, rows, p=[0.5, 0.3, 0.2])
    effect = np.select([g == "b", g == "c"], [0.4, -0.6], 0.0)
    eta = -1.0 + 0.02 * x1 + 0.15 * x2 + effect + 0.1 * node_index
    default = (rng.uniform(size=rows) < 1 / (1 + np.exp(-eta))).astype(int)
    claims = np.minimum(rng.poisson(np.exp(0.3 + 0.01 * x1 - 0.08 * x2 + effect)), 50)
    amount = np.clip(200 + 3 * x1 - 10 * x2 + 40 * effect + rng.normal(0, 50, rows), 0, 1000)
    rare = np.where(np.arange(rows) < 3, "rare", "common")
    ids = [f"p{node_index}-{i}" for i in range(rows)]
    return pd.DataFrame(
        {
            "person": ids,
            "x1": x1,
            "x2": x2,
            "g": g,
            "rare": rare,
            "defaulted": default,
            "claims": claims,
            "amount": amount,
        }
    )


def _dataset(node: str) -> dict:
    return {
        "name": "loans",
        "description": "Synthetic loans for model tests",
        "controller": node,
        "exposed": True,
        "privacy_unit": "person",
        "max_rows_per_unit": 1,
        "source": {"kind": "csv", "path": f"../data/{node}/loans.csv"},
        "columns": [
            {"name": "person", "local": "person", "kind": "identifier", "id_type": "person"},
            {"name": "x1", "local": "x1", "kind": "numeric", "bounds": [0.0, 100.0]},
            {"name": "x2", "local": "x2", "kind": "numeric", "bounds": [-5.0, 5.0]},
            {"name": "g", "local": "g", "kind": "category", "domain": LEVELS},
            {"name": "rare", "local": "rare", "kind": "category", "domain": ["common", "rare"]},
            {"name": "defaulted", "local": "defaulted", "kind": "numeric", "bounds": [0.0, 1.0]},
            {"name": "claims", "local": "claims", "kind": "numeric", "bounds": [0.0, 50.0]},
            {"name": "amount", "local": "amount", "kind": "numeric", "bounds": [0.0, 1000.0]},
        ],
    }


def start_loans(root: Path, dsn: str, rows: int) -> tuple[RunningFederation, str, pd.DataFrame]:
    frames = []

    def edit(paths: dict[str, Path]) -> None:
        for i, node in enumerate(NODES):
            frame = loans(i, rows)
            folder = root / "data" / node
            folder.mkdir(parents=True, exist_ok=True)
            frame.to_csv(folder / "loans.csv", index=False)
            frames.append(frame)
            config = tomllib.loads(paths[node].read_text())
            config["datasets"].append(_dataset(node))
            paths[node].write_text(tomli_w.dumps(config))

    fed, schema = start_federation(root, dsn, nodes=NODES, edit=edit, rows=1000)
    return fed, schema, pd.concat(frames, ignore_index=True)
