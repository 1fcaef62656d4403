"""HAVING, ORDER BY and LIMIT as the SDK's post-processing of released figures, and the messages
for SQL outside the subset."""

from __future__ import annotations

import pandas as pd
import pytest

from federation.query import parse_query, parse_with_post
from nodes.config import NodeConfig
from nodes.validate import Refused, validate
from protocols.errors import QueryError

BASE = "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations GROUP BY port"


def released() -> pd.DataFrame:
    """A combined answer as ``to_frame`` makes it: port B suppressed (missing figures)."""
    df = pd.DataFrame(
        {
            "port": ["A", "B", "C", "D"],
            "n": pd.array([5, None, 30, 12], dtype="Int64"),
            "total": pd.array([1.0, None, 3.0, 9.0], dtype="Float64"),
        }
    )
    df.attrs = {"job_id": "j1", "suppressed": [{"group": {"port": "B"}}]}
    return df


@pytest.mark.parametrize(
    ("tail", "ports"),
    [
        ("HAVING COUNT(*) > 6 ORDER BY total DESC LIMIT 5", ["D", "C"]),
        ("HAVING n > 6 AND NOT port = 'D'", ["C"]),
        ("HAVING total BETWEEN 2 AND 10 OR n < 6", ["A", "C", "D"]),
        ("ORDER BY 2 DESC", ["B", "C", "D", "A"]),  # a missing figure first when descending
        ("ORDER BY n", ["A", "D", "C", "B"]),  # and last when ascending, as in PostgreSQL
        ("ORDER BY SUM(value) DESC, port LIMIT 2", ["B", "D"]),
        ("LIMIT 0", []),
    ],
)
def test_post_processing_follows_sql(tail: str, ports: list[str]) -> None:
    spec, post = parse_with_post(f"{BASE} {tail}")
    out = post.apply(released())
    assert list(out["port"]) == ports
    assert out.attrs["job_id"] == "j1" and out.attrs["post_processing"]
    # Nothing of it is in the spec the nodes receive.
    assert spec == parse_query(BASE)


def test_without_clauses_the_answer_is_unchanged() -> None:
    out = parse_with_post(BASE)[1].apply(released())
    assert out.equals(released()) and "post_processing" not in out.attrs


@pytest.mark.parametrize(
    ("tail", "rule", "needle"),
    [
        ("HAVING AVG(value) > 3", "unsupported_clause", "add it to SELECT"),
        ("HAVING n IN (1, 2)", "unsupported_clause", "HAVING"),
        ("ORDER BY foo", "unsupported_clause", "output column"),
        ("ORDER BY 4", "unsupported_clause", "no output column 4"),
        ("LIMIT 2000000", "malformed_sql", "LIMIT"),
        ("OFFSET 2", "unsupported_clause", "OFFSET"),
    ],
)
def test_bad_post_processing_is_refused_by_rule(tail: str, rule: str, needle: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_with_post(f"{BASE} {tail}")
    assert caught.value.rule == rule and needle in caught.value.message


def test_a_quoted_number_on_a_number_category_names_the_type(node_config: NodeConfig) -> None:
    with pytest.raises(Refused) as caught:
        validate(parse_query("SELECT COUNT(*) FROM declarations WHERE year = '2022'"), node_config)
    assert caught.value.rule == "type_mismatch"
    assert "whole numbers" in caught.value.message and "year = 2021" in caught.value.message
    with pytest.raises(Refused) as caught:
        validate(parse_query("SELECT COUNT(*) FROM declarations WHERE port IN ('Rotterdam', 3)"), node_config)
    assert caught.value.rule == "type_mismatch" and "holds text" in caught.value.message
