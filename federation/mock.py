"""Mock data: synthetic rows drawn from a dataset's public schema only (after Syft's mock data).

Analysts write and test their queries against these rows before touching the federation. No
value comes from a node: categories are drawn from the public domain, numbers uniformly within
the declared bounds, identifiers are fresh fakes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.values import from_value

MAX_MOCK_ROWS = 100_000


def mock_frame(info: pb.DatasetInfo, n: int = 100, seed: int | None = None) -> pd.DataFrame:
    if not 0 < n <= MAX_MOCK_ROWS:
        raise FederationError("mock_rows_limit", f"mock rows must be between 1 and {MAX_MOCK_ROWS}, not {n}")
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for col in info.columns:
        if col.kind == pb.CATEGORY:
            domain = [from_value(v) for v in col.domain]
            data[col.name] = [domain[i] for i in rng.integers(0, len(domain), n)]
        elif col.kind == pb.NUMERIC:
            data[col.name] = np.round(rng.uniform(col.lower, col.upper, n), 2)
        elif col.kind == pb.DATE:
            start = np.datetime64("2019-01-01")
            data[col.name] = (start + rng.integers(0, 6 * 365, n).astype("timedelta64[D]")).astype(str)
        else:
            prefix = {"kvk": "9", "person": "MOCK-P"}.get(col.id_type, "MOCK-")
            width = 7 if col.id_type == "kvk" else 6
            data[col.name] = [f"{prefix}{i:0{width}d}" for i in rng.choice(10**width, size=n, replace=True)]
    df = pd.DataFrame(data)
    df.attrs = {"mock": True, "dataset": f"{info.node}.{info.name}"}
    return df
