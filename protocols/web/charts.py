"""Charts drawn on the server as inline SVG: no script, no image files, readable without colour.

Only presentation: the figures come from the caller (for example a ledger's charges).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#4b5563")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


def _nice_top(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value * (1 - 1e-12))


def _when(seconds: float, span: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%d %b %H:%M" if span < 3 * 86400 else "%d %b %Y")


def step_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    y_label: str,
    limit: float | None = None,
    limit_label: str = "budget",
    width: int = 760,
    height: int = 280,
    end: float | None = None,
) -> Markup:
    """Cumulative figures over time (x: unix seconds), one stepped line per series, an optional dashed
    limit line; lines run on to ``end`` (for example now). Each line has its own colour and dash so
    the legend reads in black and white."""
    left, right, top, bottom = 64, 16, 34, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="{left}" y="20" font-size="14" font-weight="600" fill="#1d2733">{escape(title)}</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#5b6675" font-size="13">'
            "nothing spent yet</text></svg>"
        )
        return Markup("".join(parts))
    x0 = min(x for x, _ in points)
    x1 = max(max(x for x, _ in points), x0 + 60, end or 0.0)
    y_top = _nice_top(max([y for _, y in points] + ([limit] if limit else [])) * 1.05)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y_top * plot_h

    for i in range(5):
        value = y_top * i / 4
        y = sy(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#5b6675">{value:g}</text>'
        )
    for i in range(3):
        x = x0 + (x1 - x0) * i / 2
        anchor = ("start", "middle", "end")[i]
        parts.append(
            f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" font-size="11" '
            f'fill="#5b6675">{escape(_when(x, x1 - x0))} UTC</text>'
        )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" font-size="11" fill="#5b6675" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8a96a3"/>'
    )
    if limit:
        y = sy(limit)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#b3261e" '
            f'stroke-dasharray="4 4" stroke-width="1.5"/>'
            f'<text x="{left + plot_w - 4}" y="{y - 5:.1f}" text-anchor="end" font-size="11" fill="#b3261e">'
            f"{escape(limit_label)} {limit:g}</text>"
        )
    legend_x: float = left
    for n, (name, values) in enumerate(series.items()):
        colour, dash = PALETTE[n % len(PALETTE)], DASHES[(n // len(PALETTE) + n) % len(DASHES)]
        coords: list[str] = []
        last = 0.0
        for x, y in sorted(values):
            coords.append(f"{sx(x):.1f},{sy(last):.1f}")
            coords.append(f"{sx(x):.1f},{sy(y):.1f}")
            last = y
        coords.append(f"{sx(x1):.1f},{sy(last):.1f}")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash_attr} points="{" ".join(coords)}"/>'
        )
        label = f"{name}: {last:.3g}"
        parts.append(
            f'<line x1="{legend_x}" y1="{height - 12}" x2="{legend_x + 18}" y2="{height - 12}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{legend_x + 22}" y="{height - 8}" font-size="11" fill="#1d2733">{escape(label)}</text>'
        )
        legend_x += 30 + 6.5 * len(label)
    parts.append("</svg>")
    return Markup("".join(parts))
