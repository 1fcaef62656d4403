"""How a query result shows its uncertainty: each noisy figure with its 95% interval.

``ResultFrame`` is the DataFrame the SDK returns. It behaves as any DataFrame; only its notebook
(HTML) view differs, writing each noisy figure as "1,234 ± 56", or "1,234 [1,200, 1,290]" when
the interval is not symmetric (a count or sum moved into its feasible range, an AVG, a discrete
noise interval). The values themselves stay numbers.
"""

from __future__ import annotations

import html
import math
import statistics
from typing import Any

import pandas as pd


def number_text(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{_decimals(value)}f}"


def _decimals(value: float) -> int:
    size = abs(value)
    return 0 if size >= 1000 else 1 if size >= 10 else 2 if size >= 0.1 else 4


def interval_text(value: float, low: float, high: float) -> str:
    """'v ± h' when the interval is symmetric around ``value``, else 'v [low, high]'."""
    v = number_text(value)
    below, above = value - low, high - value
    if (
        math.isfinite(below)
        and math.isfinite(above)
        and math.isclose(below, above, rel_tol=1e-9, abs_tol=1e-9)
    ):
        return f"{v} ± {number_text(above)}"
    return f"{v} [{number_text(low)}, {number_text(high)}]"


def intervals_by_group(df: pd.DataFrame) -> dict[str, dict[tuple[Any, ...], tuple[float, float]]]:
    """{column: {group key: (ci_low, ci_high)}} from a query result's ``attrs["noise"]``."""
    out: dict[str, dict[tuple[Any, ...], tuple[float, float]]] = {}
    for column, cells in df.attrs.get("noise", {}).items():
        out[column] = {tuple(cell["group"].values()): tuple(cell["ci95"]) for cell in cells}
    return out


def swamped_columns(df: pd.DataFrame) -> list[str]:
    """Noisy columns whose median 95% half-width is larger than their median released figure.

    A SUM or AVG under its dataset's declared clamp and rows per unit can carry noise larger than
    the totals themselves; a figure of 0 with an interval of [0, 2e8] says nothing, and the
    analyst should tighten the clamp for the query instead of spending more budget.
    """
    out = []
    for column, cells in df.attrs.get("noise", {}).items():
        if not cells or column not in df.columns:
            continue
        widths = [(high - low) / 2 for low, high in (cell["ci95"] for cell in cells)]
        values = [abs(float(v)) for v in pd.to_numeric(df[column], errors="coerce").dropna()]
        if values and statistics.median(widths) > statistics.median(values):
            out.append(column)
    return out


def swamped_hint(df: pd.DataFrame) -> str | None:
    """One line for the analyst when noise swamps a column's figures, naming what to change."""
    columns = swamped_columns(df)
    if not columns:
        return None
    return (
        f"{', '.join(columns)}: the 95% interval is wider than the figure itself. Tighten the clamp "
        "for this query (SUM(LEAST(GREATEST(x, 0), cap)), bounds=, max_rows_per_unit=) and check "
        "the interval first with --explain (fed.explain); nothing is spent to check."
    )


def with_interval_text(df: pd.DataFrame) -> pd.DataFrame:
    """A plain DataFrame in which every noisy figure is text with its interval; others unchanged."""
    shown = pd.DataFrame(df).copy()
    noise = intervals_by_group(df)
    for column, cis in noise.items():
        if column not in shown.columns or not cis:
            continue
        group_cols = list(next(iter(df.attrs["noise"][column]))["group"])
        if any(g not in shown.columns for g in group_cols):
            continue  # reshaped since the query: the figures alone
        texts = []
        for _, row in shown.iterrows():
            value = row[column]
            ci = cis.get(tuple(row[g] for g in group_cols))
            if value is pd.NA or value is None or (isinstance(value, float) and math.isnan(value)):
                texts.append("suppressed")
            elif ci is None:
                texts.append(number_text(float(value)))
            else:
                texts.append(interval_text(float(value), ci[0], ci[1]))
        shown[column] = texts
    return shown


class ResultFrame(pd.DataFrame):
    """A query result: a DataFrame whose notebook view shows each figure with its 95% interval."""

    @property
    def _constructor(self) -> type[ResultFrame]:
        return ResultFrame

    def _repr_html_(self) -> str | None:
        try:
            shown = with_interval_text(self)
        except (KeyError, TypeError, ValueError, StopIteration):
            shown = pd.DataFrame(self)  # a reshaped frame the attrs no longer describe
        note = (
            "<p><small>figures ± 95% interval of the privacy noise</small></p>"
            if self.attrs.get("noise")
            else ""
        )
        try:
            hint = swamped_hint(self)
        except (KeyError, TypeError, ValueError):
            hint = None
        if hint:
            note += f"<p><small><b>{html.escape(hint)}</b></small></p>"
        return (shown._repr_html_() or "") + note
