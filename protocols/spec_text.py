"""A job spec as the text its analyst wrote: SQL for a query, one line for an overlap.

Officers read specs in audit exports and pending approvals. The node keeps each spec as the JSON
form of its protobuf message (``MessageToDict``); this turns that back into the SQL subset of
``federation/query.py``. The text is for reading: the hash an officer approves is the spec's.
"""

from __future__ import annotations

import json
from typing import Any

_OPS = {"EQ": "=", "NE": "<>", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}


def value_text(value: dict[str, Any]) -> str:
    if "text" in value:
        return "'" + str(value["text"]).replace("'", "''") + "'"
    if "boolean" in value:
        return "TRUE" if value["boolean"] else "FALSE"
    for kind in ("integer", "real"):
        if kind in value:
            return str(value[kind])  # MessageToDict writes int64 as a string
    return "NULL"


def filter_text(f: dict[str, Any]) -> str:
    if "compare" in f:
        c = f["compare"]
        return f"{c.get('column', '')} {_OPS.get(c.get('op', ''), '?')} {value_text(c.get('value', {}))}"
    if "in_list" in f:
        c = f["in_list"]
        listed = ", ".join(value_text(v) for v in c.get("values", []))
        return f"{c.get('column', '')} {'NOT IN' if c.get('negated') else 'IN'} ({listed})"
    if "between" in f:
        c = f["between"]
        low, high = value_text(c.get("low", {})), value_text(c.get("high", {}))
        return f"{c.get('column', '')} BETWEEN {low} AND {high}"
    for key, joiner in (("all_of", " AND "), ("any_of", " OR ")):
        if key in f:
            return "(" + joiner.join(filter_text(item) for item in f[key].get("items", [])) + ")"
    if "negate" in f:
        return f"NOT ({filter_text(f['negate'])})"
    return "?"


def aggregate_text(a: dict[str, Any]) -> str:
    function, column = a.get("function", "COUNT"), a.get("column", "")
    if function == "COUNT" and not column:
        text = "COUNT(*)"
    elif function == "COUNT_DISTINCT":
        name = "COUNT_DISTINCT_PER_NODE" if a.get("per_node") else "COUNT"
        text = f"{name}(DISTINCT {column})" if name == "COUNT" else f"{name}({column})"
    elif function == "PERCENTILE":
        text = f"PERCENTILE_CONT({a.get('quantile', 0.5)}) WITHIN GROUP (ORDER BY {column})"
    else:
        text = f"{function}({column or '*'})"
    bounds = a.get("bounds")
    if bounds:
        text += f" /* bounds {bounds.get('lower', 0.0)}..{bounds.get('upper', 0.0)} */"
    alias = a.get("alias", "")
    return f"{text} AS {alias}" if alias else text


def query_sql(spec: dict[str, Any]) -> str:
    """A query spec (``MessageToDict`` form) as SQL; privacy settings follow as a comment."""
    group_by = list(spec.get("group_by", []))
    items = [*group_by, *(aggregate_text(a) for a in spec.get("aggregates", []))]
    source = f"{spec['node']}.{spec.get('dataset', '')}" if spec.get("node") else spec.get("dataset", "")
    sql = f"SELECT {', '.join(items)} FROM {source}"
    if spec.get("filter"):
        sql += f" WHERE {filter_text(spec['filter'])}"
    if group_by:
        sql += f" GROUP BY {', '.join(group_by)}"
    notes = []
    privacy = spec.get("privacy") or {}
    for key in ("epsilon", "rho", "delta"):
        if privacy.get(key):
            notes.append(f"{key} {privacy[key]}")
    if spec.get("secure"):
        notes.append("secure aggregation")
    if spec.get("max_rows_per_unit"):
        notes.append(f"max {spec['max_rows_per_unit']} rows per unit")
    return sql + (f" -- {', '.join(notes)}" if notes else "")


def spec_text(spec: dict[str, Any] | str) -> str:
    """Any job spec as readable text: SQL for queries, a line for overlaps, else compact JSON."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            return str(spec)
    if not isinstance(spec, dict):
        return json.dumps(spec)
    if "aggregates" in spec and "dataset" in spec:
        return query_sql(spec)
    if "outcome" in spec and "dataset" in spec:
        terms = " + ".join(
            str(c.get("column", "")) for c in spec.get("covariates", []) if isinstance(c, dict)
        )
        family = (
            spec.get("family", "gaussian") if spec.get("trainer", "glm") == "glm" else spec.get("trainer")
        )
        return f"MODEL {family}: {spec['outcome']} ~ {terms or '1'} ON {spec['dataset']}"
    if "on" in spec:
        if spec.get("distinct"):
            return f"{query_sql(spec['distinct'])} -- union of distinct {spec['on']} across nodes"
        names = ", ".join(_party(p) for p in spec.get("datasets", []))
        text = f"OVERLAP ON {spec['on']} OF {names}"
        epsilon = (spec.get("privacy") or {}).get("epsilon")
        return text + (f" -- epsilon {epsilon}" if epsilon else "")
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _party(p: Any) -> str:
    if not isinstance(p, dict):
        return str(p)
    name = p.get("dataset", "")
    if p.get("filter"):
        name += f" WHERE {filter_text(p['filter'])}"
    return name
