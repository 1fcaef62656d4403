"""Parsing the analyst's SQL subset into a ``QuerySpec`` (federation/query.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.query import MAX_SQL_CHARS, parse_query
from protocols import federation_pb2 as pb
from protocols.errors import QueryError
from protocols.spec_limits import MAX_FILTER_DEPTH, MAX_FILTER_TERMS, MAX_IN_LIST_VALUES, MAX_TEXT_CHARS


def only_filter(sql: str) -> pb.Filter:
    spec = parse_query(f"SELECT COUNT(*) FROM declarations WHERE {sql}")
    assert spec.HasField("filter")
    return spec.filter


def compare(column: str, op: int, value: pb.Value) -> pb.Filter:
    return pb.Filter(compare=pb.Comparison(column=column, op=op, value=value))


def refused(sql: str) -> QueryError:
    with pytest.raises(QueryError) as info:
        parse_query(sql)
    return info.value


# ---------------------------------------------------------------- accepted forms


def test_count_star_with_default_alias() -> None:
    spec = parse_query("SELECT COUNT(*) FROM declarations")
    assert spec.dataset == "declarations"
    assert spec.node == ""
    assert list(spec.group_by) == []
    assert not spec.HasField("filter")
    assert list(spec.aggregates) == [pb.Aggregate(function=pb.COUNT, alias="count")]


def test_count_distinct_unit() -> None:
    spec = parse_query("SELECT COUNT(DISTINCT company) FROM declarations")
    assert list(spec.aggregates) == [
        pb.Aggregate(function=pb.COUNT_DISTINCT, column="company", alias="distinct_company")
    ]


def test_sum_and_avg_default_aliases() -> None:
    spec = parse_query("SELECT SUM(value), AVG(value) FROM declarations")
    assert list(spec.aggregates) == [
        pb.Aggregate(function=pb.SUM, column="value", alias="sum_value"),
        pb.Aggregate(function=pb.AVG, column="value", alias="avg_value"),
    ]


def test_explicit_aliases_are_kept_lower_case() -> None:
    spec = parse_query(
        "SELECT COUNT(*) AS N, COUNT(DISTINCT company) AS firms, SUM(value) total, AVG(value) AS mean "
        "FROM declarations"
    )
    assert [a.alias for a in spec.aggregates] == ["n", "firms", "total", "mean"]
    assert [a.function for a in spec.aggregates] == [pb.COUNT, pb.COUNT_DISTINCT, pb.SUM, pb.AVG]


def test_node_qualified_dataset() -> None:
    spec = parse_query("SELECT COUNT(*) FROM Douane.Declarations")
    assert (spec.node, spec.dataset) == ("douane", "declarations")


def test_group_by_columns_in_order_and_case_folded() -> None:
    spec = parse_query("SELECT Port, year, COUNT(*) FROM declarations GROUP BY PORT, Year")
    assert list(spec.group_by) == ["port", "year"]
    assert len(spec.aggregates) == 1


def test_group_by_without_selecting_the_group_column() -> None:
    spec = parse_query("SELECT COUNT(*) FROM declarations GROUP BY port")
    assert list(spec.group_by) == ["port"]


@pytest.mark.parametrize(
    ("text", "op"),
    [("=", pb.EQ), ("<>", pb.NE), ("!=", pb.NE), ("<", pb.LT), ("<=", pb.LE), (">", pb.GT), (">=", pb.GE)],
)
def test_comparison_operators(text: str, op: int) -> None:
    assert only_filter(f"year {text} 2022") == compare("year", op, pb.Value(integer=2022))


@pytest.mark.parametrize(
    ("text", "op"),
    [("=", pb.EQ), ("<>", pb.NE), ("<", pb.GT), ("<=", pb.GE), (">", pb.LT), (">=", pb.LE)],
)
def test_literal_on_the_left_flips_the_operator(text: str, op: int) -> None:
    # 2022 < year means year > 2022.
    assert only_filter(f"2022 {text} year") == compare("year", op, pb.Value(integer=2022))


def test_text_real_and_boolean_literals() -> None:
    assert only_filter("port = 'Rotterdam'") == compare("port", pb.EQ, pb.Value(text="Rotterdam"))
    assert only_filter("'it''s' = port") == compare("port", pb.EQ, pb.Value(text="it's"))
    assert only_filter("value >= 12.5") == compare("value", pb.GE, pb.Value(real=12.5))
    assert only_filter("inspected = TRUE") == compare("inspected", pb.EQ, pb.Value(boolean=True))


def test_negative_numbers() -> None:
    assert only_filter("value > -5") == compare("value", pb.GT, pb.Value(integer=-5))
    assert only_filter("value < -1.5") == compare("value", pb.LT, pb.Value(real=-1.5))
    assert only_filter("-3 = value") == compare("value", pb.EQ, pb.Value(integer=-3))
    between = only_filter("value BETWEEN -10 AND -2.5").between
    assert (between.low, between.high) == (pb.Value(integer=-10), pb.Value(real=-2.5))


def test_in_and_not_in() -> None:
    values = [pb.Value(text="Rotterdam"), pb.Value(text="Moerdijk")]
    assert only_filter("port IN ('Rotterdam', 'Moerdijk')") == pb.Filter(
        in_list=pb.InList(column="port", values=values)
    )
    negated = pb.Filter(in_list=pb.InList(column="port", values=values, negated=True))
    assert only_filter("port NOT IN ('Rotterdam', 'Moerdijk')") == negated
    # NOT around an IN folds into the list itself, with or without parentheses.
    assert only_filter("NOT port IN ('Rotterdam', 'Moerdijk')") == negated
    assert only_filter("NOT (port IN ('Rotterdam', 'Moerdijk'))") == negated


def test_between() -> None:
    assert only_filter("year BETWEEN 2021 AND 2023") == pb.Filter(
        between=pb.Between(column="year", low=pb.Value(integer=2021), high=pb.Value(integer=2023))
    )


def test_and_or_not_nesting_keeps_precedence() -> None:
    got = only_filter("port = 'Rotterdam' AND year = 2022 OR NOT (inspected = 1 AND value > 10)")
    port = compare("port", pb.EQ, pb.Value(text="Rotterdam"))
    year = compare("year", pb.EQ, pb.Value(integer=2022))
    inspected = compare("inspected", pb.EQ, pb.Value(integer=1))
    value = compare("value", pb.GT, pb.Value(integer=10))
    expected = pb.Filter(
        any_of=pb.FilterList(
            items=[
                pb.Filter(all_of=pb.FilterList(items=[port, year])),
                pb.Filter(negate=pb.Filter(all_of=pb.FilterList(items=[inspected, value]))),
            ]
        )
    )
    assert got == expected


def test_chained_and_is_flattened() -> None:
    got = only_filter("year = 2021 AND year = 2022 AND (year = 2023)")
    assert got.WhichOneof("kind") == "all_of"
    assert [item.compare.value.integer for item in got.all_of.items] == [2021, 2022, 2023]


def test_not_between_is_a_negated_between() -> None:
    got = only_filter("year NOT BETWEEN 2021 AND 2022")
    assert got.WhichOneof("kind") == "negate"
    assert got.negate.between.column == "year"


def test_full_query() -> None:
    spec = parse_query(
        "SELECT port, year, COUNT(*) AS n, AVG(value) FROM douane.declarations "
        "WHERE port IN ('Rotterdam') AND year >= 2021 GROUP BY port, year"
    )
    assert spec.node == "douane"
    assert list(spec.group_by) == ["port", "year"]
    assert [a.alias for a in spec.aggregates] == ["n", "avg_value"]
    assert spec.filter.WhichOneof("kind") == "all_of"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("sql", "rule", "words"),
    [
        ("SELECT * FROM declarations", "raw_rows", "SELECT *"),
        ("SELECT port FROM declarations", "raw_rows", "'port'"),
        ("SELECT port, COUNT(*) FROM declarations", "raw_rows", "'port'"),
        ("SELECT port, COUNT(*) FROM declarations GROUP BY year", "raw_rows", "'port'"),
        ("SELECT port FROM declarations GROUP BY port", "raw_rows", "aggregate"),
        (
            "SELECT COUNT(*) FROM declarations d JOIN vat v ON d.company = v.company",
            "unsupported_clause",
            "JOIN",
        ),
        ("SELECT COUNT(*) FROM declarations, vat", "unsupported_clause", "JOIN"),
        (
            "SELECT port, COUNT(*) FROM declarations GROUP BY port HAVING SUM(value) > 5",
            "unsupported_clause",
            "add it to SELECT",
        ),
        ("SELECT COUNT(*) FROM declarations ORDER BY 3", "unsupported_clause", "ORDER BY"),
        ("SELECT COUNT(*) FROM declarations LIMIT 'ten'", "malformed_sql", "LIMIT"),
        ("SELECT DISTINCT COUNT(*) FROM declarations", "unsupported_clause", "DISTINCT"),
        ("WITH x AS (SELECT 1) SELECT COUNT(*) FROM x", "unsupported_clause", "WITH"),
        (
            "SELECT COUNT(*) FROM declarations WHERE company IN (SELECT company FROM vat)",
            "unsupported_expression",
            "subqueries",
        ),
        ("SELECT COUNT(*) FROM declarations WHERE lower(port) = 'x'", "unsupported_expression", "LOWER"),
        (
            "SELECT COUNT(*) FROM declarations WHERE value + 1 > 5",
            "unsupported_expression",
            "expected a column",
        ),
        ("SELECT COUNT(*) FROM declarations WHERE port LIKE 'R%'", "unsupported_expression", "LIKE"),
        ("SELECT COUNT(*) FROM declarations WHERE port IS NULL", "unsupported_expression", "IS NULL"),
        ("SELECT COUNT(*) FROM declarations WHERE port = year", "unsupported_expression", "literal"),
        ("SELECT COUNT(*) FROM declarations WHERE 1 = 1", "unsupported_expression", "column"),
        ("SELECT COUNT(*) FROM declarations WHERE d.port = 'x'", "unsupported_expression", "prefix"),
        ("SELECT MAX(value) FROM declarations", "unsupported_aggregate", "MAX"),
        ("SELECT COUNT(value) FROM declarations", "unsupported_aggregate", "COUNT(value)"),
        ("SELECT SUM(value + 1) FROM declarations", "unsupported_expression", "value + 1"),
        ("SELECT COUNT(* FROM declarations", "malformed_sql", "cannot parse"),
        ("SELECT COUNT(*) FROM declarations WHERE port = 'x", "malformed_sql", "cannot parse"),
        ("SELEC COUNT(*) FROM declarations", "malformed_sql", ""),
        ("SELECT COUNT(*)", "malformed_sql", "FROM"),
        ("SELECT COUNT(*) FROM (SELECT 1)", "malformed_sql", "FROM"),
        ("SELECT COUNT(*) FROM a.b.c", "malformed_sql", "node.dataset"),
        ("SELECT COUNT(*) FROM declarations WHERE port IN ()", "malformed_sql", "empty"),
        ("SELECT COUNT(*) FROM declarations WHERE year = 99999999999999999999", "malformed_sql", "range"),
        ("SELECT COUNT(*), COUNT(*) FROM declarations", "malformed_sql", "twice"),
        ("SELECT COUNT(*) AS port FROM declarations GROUP BY port", "malformed_sql", "twice"),
        ("SELECT COUNT(*) FROM declarations GROUP BY port, port", "malformed_sql", "twice"),
        ("SELECT COUNT(*) FROM declarations; SELECT COUNT(*) FROM vat", "malformed_sql", "one SELECT"),
        ("SELECT COUNT(*) FROM declarations; DROP TABLE declarations", "malformed_sql", "one SELECT"),
        ("SELECT COUNT(*) FROM a UNION SELECT COUNT(*) FROM b", "malformed_sql", "SELECT"),
        ("INSERT INTO declarations VALUES (1)", "malformed_sql", "SELECT"),
        ("DROP TABLE declarations", "malformed_sql", "SELECT"),
        ("DELETE FROM declarations", "malformed_sql", "SELECT"),
        ("", "malformed_sql", "empty"),
        ("   \n\t ", "malformed_sql", "empty"),
    ],
)
def test_refusal_names_the_rule(sql: str, rule: str, words: str) -> None:
    error = refused(sql)
    assert error.rule == rule, str(error)
    assert words.lower() in error.message.lower()
    assert "\n" not in error.message
    assert f"[rule: {rule}]" in str(error)


def test_oversized_query_is_refused_before_parsing() -> None:
    values = ", ".join(f"'v{i:05d}'" for i in range(MAX_SQL_CHARS // 8))
    sql = f"SELECT COUNT(*) FROM declarations WHERE port IN ({values})"
    assert len(sql) > MAX_SQL_CHARS
    error = refused(sql)
    assert error.rule == "oversized_request"
    assert str(MAX_SQL_CHARS) in error.message


def test_query_just_under_the_limit_is_parsed() -> None:
    head = "SELECT COUNT(*) FROM declarations WHERE port = "
    literal = "'" + "x" * MAX_TEXT_CHARS + "'"
    sql = head + " " * (MAX_SQL_CHARS - len(head) - len(literal)) + literal
    assert len(sql) == MAX_SQL_CHARS
    assert parse_query(sql).filter.compare.value.text == "x" * MAX_TEXT_CHARS


@pytest.mark.parametrize(
    ("where", "rule"),
    [
        ("NOT " * (MAX_FILTER_DEPTH + 1) + "port = 'x'", "expression_too_deep"),
        ("NOT " * 96 + "port = 'x'", "expression_too_deep"),  # where the protobuf decoder gave up
        ("NOT " * 99 + "port = 'x'", "expression_too_deep"),
        ("port IN (" + ", ".join(["1"] * (MAX_IN_LIST_VALUES + 1)) + ")", "in_list_too_long"),
        (" OR ".join(["year = 2020"] * (MAX_FILTER_TERMS + 1)), "expression_too_large"),
        (
            " OR ".join(f"port IN ({', '.join(['1'] * 900)})" for _ in range(3)),
            "expression_too_large",
        ),
        ("port = '" + "x" * (MAX_TEXT_CHARS + 1) + "'", "oversized_request"),
    ],
)
def test_filters_past_the_spec_bounds_are_refused_by_rule(where: str, rule: str) -> None:
    error = refused("SELECT COUNT(*) FROM declarations WHERE " + where)
    assert error.rule == rule, str(error)


def test_filters_at_the_spec_bounds_are_parsed() -> None:
    deep = "NOT " * (MAX_FILTER_DEPTH - 1) + "port = 'x'"
    assert parse_query("SELECT COUNT(*) FROM declarations WHERE " + deep).HasField("filter")
    listed = "port IN (" + ", ".join(["1"] * MAX_IN_LIST_VALUES) + ")"
    spec = parse_query("SELECT COUNT(*) FROM declarations WHERE " + listed)
    assert len(spec.filter.in_list.values) == MAX_IN_LIST_VALUES


def test_deep_nesting_is_a_query_error() -> None:
    sql = "SELECT COUNT(*) FROM declarations WHERE " + "NOT " * 3000 + "year = 2022"
    assert len(sql) < MAX_SQL_CHARS
    assert refused(sql).rule == "expression_too_deep"


def test_non_string_input_is_a_query_error() -> None:
    with pytest.raises(QueryError) as info:
        parse_query(None)  # type: ignore[arg-type]
    assert info.value.rule == "malformed_sql"


def test_smallest_int64_literal_is_accepted() -> None:
    assert only_filter("year = -9223372036854775808") == compare("year", pb.EQ, pb.Value(integer=-(2**63)))


@pytest.mark.parametrize(
    "sql", ["SELECT COUNT(*) FROM read_csv('/etc/passwd')", "SELECT COUNT(*) FROM 'declarations.csv'"]
)
def test_from_must_name_a_dataset(sql: str) -> None:
    assert refused(sql).rule == "malformed_sql"


# ---------------------------------------------------------------- robustness

KEYWORDS = [
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "COUNT", "SUM", "AVG", "DISTINCT", "AS", "AND", "OR",
    "NOT", "IN", "BETWEEN", "JOIN", "ON", "HAVING", "ORDER", "LIMIT", "UNION", "WITH", "NULL", "IS",
    "LIKE", "CASE", "WHEN", "THEN", "END", "CAST", "DATE", "INTERVAL", "INSERT", "DROP", "TABLE",
    "(", ")", "*", ",", ";", "=", "<>", "<", ">=", "-", "+", "::", ".", "'", '"', "--", "/*", "*/",
    "?", "$1", ":x", "@", "[", "]", "{", "}", "1", "-1", "2.5", "1e999", "9223372036854775808",
    "'Rotterdam'", "'x'' OR 1=1 --'", "declarations", "douane.declarations", "a.b.c", "port",
    "year", "value", "company", "TRUE",
]  # fmt: skip


def _parses_or_refuses(sql: str) -> None:
    try:
        spec = parse_query(sql)
    except QueryError as error:
        assert error.rule in {
            "malformed_sql",
            "malformed_request",
            "expression_too_deep",
            "expression_too_large",
            "in_list_too_long",
            "oversized_request",
            "raw_rows",
            "unsupported_clause",
            "unsupported_expression",
            "unsupported_aggregate",
        }
        assert error.message
    else:
        assert isinstance(spec, pb.QuerySpec)
        assert spec.aggregates


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_parses_or_raises_query_error(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(KEYWORDS), min_size=1, max_size=30),
    st.sampled_from(["", "SELECT COUNT(*) FROM declarations WHERE ", "SELECT "]),
)
def test_keyword_soup_parses_or_raises_query_error(tokens: list[str], prefix: str) -> None:
    _parses_or_refuses(prefix + " ".join(tokens))
