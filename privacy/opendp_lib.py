"""OpenDP, loaded on first use.

The library holds some 45 MB resident once imported; a node that sits idle, or only answers
overlaps and budget reads, never needs it, so the noise and accounting functions load it when
they first run (docs/benchmarks.md, idle node memory).
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def opendp() -> Any:
    """``opendp.prelude`` with the contrib features this project uses enabled (OpenDP docs, "contrib")."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp
