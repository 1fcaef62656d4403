"""Print docs/vocabulary.md from the shared vocabulary and the dataset specifications.

``python -m federation.scenario.vocabulary_doc > docs/vocabulary.md``; a unit test checks that the
committed file equals this output, so the documented vocabulary is the one the scenario uses.
"""

from __future__ import annotations

from federation.scenario.datasets import DATASETS, ColumnSpec
from federation.scenario.vocabulary import CONTROLLERS, DOMAINS, NODES

COMMAND = "python -m federation.scenario.vocabulary_doc > docs/vocabulary.md"

_INTRO = f"""\
# Shared vocabulary

The names and values every partner maps its own data onto, so that one query means the same at
every node. An analyst writes queries in these names only; each partner's node config maps its
local column names and codes onto them (`local`, `codes`; see [config.md](config.md)). A local
value that maps to no value of the domain falls in no group: `federation node check` counts such
rows per column.

This page is generated from `federation/scenario/vocabulary.py` and
`federation/scenario/datasets.py`, the same source the synthetic scenario (`federation demo-data`)
is generated from; `federation vocabulary` prints it. Do not edit it by hand; after changing the
vocabulary run

```bash
{COMMAND}
```
"""


def _values(values: tuple[object, ...]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _domain_name(col: ColumnSpec) -> str | None:
    for name, (values, _) in DOMAINS.items():
        if col.domain == values:
            return name
    return None


def _column_values(col: ColumnSpec) -> str:
    if col.kind == "category" and col.domain is not None:
        name = _domain_name(col)
        return f"domain [{name}](#{name})" if name else _values(col.domain)
    if col.kind == "numeric" and col.bounds is not None:
        return f"bounds {col.bounds[0]:,} to {col.bounds[1]:,}"
    if col.kind == "date" and col.date_range is not None:
        return f"{col.date_range[0]} to {col.date_range[1]}"
    if col.kind == "identifier" and col.id_type is not None:
        return f"identifier of type `{col.id_type}`"
    return ""


def render() -> str:
    """The full text of docs/vocabulary.md."""
    lines = [_INTRO, "## Partners", "", "| node id | controller |", "|---|---|"]
    lines += [f"| `{node}` | {CONTROLLERS[node]} |" for node in NODES]
    lines += ["", "## Domains", ""]
    lines += ["Category columns take their values from these public domains, in this order.", ""]
    for name, (values, meaning) in DOMAINS.items():
        lines += [f"### {name}", "", f"{meaning[0].upper()}{meaning[1:]}.", "", _values(values), ""]
    lines += ["## Datasets", ""]
    lines += [
        "Each dataset as analysts address it (`node.dataset`), with its privacy unit: the entity whose",
        "contribution differential privacy bounds ([privacy.md](privacy.md)).",
        "",
    ]
    for spec in DATASETS:
        lines += [f"### {spec.key}", "", f"{spec.description}. Privacy unit: `{spec.privacy_unit}`.", ""]
        lines += ["| column | kind | values |", "|---|---|---|"]
        lines += [f"| `{col.name}` | {col.kind} | {_column_values(col)} |" for col in spec.columns]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
