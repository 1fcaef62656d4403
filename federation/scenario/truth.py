"""Ground truth computed from the scenario's pooled frames, to check federated answers against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from federation.scenario.datasets import Scenario
from federation.scenario.errors import ScenarioError


def ground_truth_overlap(s: Scenario, on: str, datasets: list[str]) -> dict[frozenset[str], int]:
    """Distinct entities per exact membership pattern over ``datasets``.

    ``{frozenset({"douane.declarations", "politie.incidents"}): 12, ...}`` means 12 entities
    appear in exactly those two datasets and in none of the others listed.
    """
    if on not in ("company", "person"):
        raise ScenarioError("overlap_column", f"overlap is on 'company' or 'person', got {on!r}")
    keys = list(dict.fromkeys(datasets))
    if not keys:
        raise ScenarioError("datasets_nonempty", "give at least one dataset")
    if len(keys) > 62:
        raise ScenarioError("datasets_maximum", "at most 62 datasets fit in one membership pattern")
    parts = []
    for bit, key in enumerate(keys):
        if key not in s.frames:
            raise ScenarioError("dataset_known", f"dataset {key!r} is not in this scenario")
        if on not in s.frames[key].columns:
            raise ScenarioError("overlap_column", f"dataset {key!r} has no {on!r} column")
        ids = pd.unique(s.frames[key][on].dropna())
        parts.append(pd.DataFrame({"id": ids, "bit": np.int64(1) << bit}))
    masks = pd.concat(parts, ignore_index=True).groupby("id")["bit"].sum().value_counts()
    return {
        frozenset(k for bit, k in enumerate(keys) if int(mask) >> bit & 1): int(count)
        for mask, count in masks.items()
    }
