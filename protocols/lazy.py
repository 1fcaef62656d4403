"""Modules loaded on their first use.

numpy holds some 13 MB resident once imported, and a node that sits idle, or only answers plain
queries, overlaps and budget reads, never needs it (docs/benchmarks.md, "Node memory at idle").
The modules that use it bind ``np = lazy_module("numpy")`` and import it for real only under
``TYPE_CHECKING``; the first attribute read loads the module.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    """A stand-in for a module: the first attribute read imports it; each attribute is then kept
    on the stand-in, so a later read costs what a module attribute read costs."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy, pickle and the like probe dunders: not the module's
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<module {self._name!r}, loaded on first use>"


def lazy_module(name: str) -> Any:
    """``name``, imported when one of its attributes is first read."""
    return _LazyModule(name)
