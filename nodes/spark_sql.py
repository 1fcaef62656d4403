"""The node's own SQL rendered for Spark SQL, every bound parameter as a typed literal.

``nodes.sqlgen`` writes SQL for the ``SPARK`` dialect in DuckDB syntax with ``?`` placeholders and
a list of parameters taken from the checked plan and the operator's config. Spark SQL has no
server-side bind that covers every place a parameter stands here (Spark Connect and older clusters
included), so each parameter becomes a literal built by sqlglot from its Python type (never from
analyst text: analyst SQL was parsed into a plan and is gone), and sqlglot transpiles the whole
statement to Spark's dialect, which quotes identifiers with backticks and escapes string literals
the Spark way. Placeholders are found with sqlglot's tokenizer, so a ``?`` inside a quoted
identifier or literal is never taken for one.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

_READ = sqlglot.Dialect.get_or_raise("duckdb")


class RenderError(ValueError):
    """A parameter has no safe literal form (a type or value the node never binds)."""


def literal(value: Any) -> str:
    """``value`` as a DuckDB literal made by sqlglot, re-read by the transpiler below."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        text = exp.Literal.number(value).sql(_READ)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError("a parameter is not a finite number")
        # An exponent makes Spark read a DOUBLE (a plain 1.5 would be a DECIMAL), and repr() is the
        # shortest text that reads back as the same double.
        text = repr(value) if "e" in repr(value) else f"{value!r}e0"
    elif isinstance(value, dt.date):
        return exp.Literal.string(value.isoformat()).sql(_READ)
    elif isinstance(value, str):
        return exp.Literal.string(value).sql(_READ)
    else:
        raise RenderError(f"a parameter of type {type(value).__name__} has no literal form")
    # A negative number after an operator must not read as a comment ("- -1").
    return f"({text})" if text.startswith("-") else text


def spark_sql(sql: str, params: list[Any]) -> str:
    """Spark SQL text of ``sql`` (DuckDB syntax, ``?`` placeholders) with ``params`` bound in order."""
    tokens = [t for t in _READ.tokenize(sql) if t.token_type == TokenType.PLACEHOLDER]
    if len(tokens) != len(params):
        raise RenderError(f"{len(tokens)} placeholders for {len(params)} parameters")
    parts, at = [], 0
    for token, value in zip(tokens, params, strict=True):
        parts += [sql[at : token.start], literal(value)]
        at = token.end + 1
    parts.append(sql[at:])
    return sqlglot.transpile("".join(parts), read="duckdb", write="spark")[0]
