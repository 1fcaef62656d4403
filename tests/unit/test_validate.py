"""Checking a job spec against the node's declared schema and policy (nodes/validate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from federation.query import parse_query
from nodes.config import NodeConfig
from nodes.validate import MAX_AGGREGATES, MAX_FILTER_TERMS, Plan, Refused, validate
from protocols import federation_pb2 as pb
from protocols.spec_limits import MAX_FILTER_DEPTH

PORT_DOMAIN = ("Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk")
YEAR_DOMAIN = (2021, 2022, 2023)


def plan_for(sql: str, config: NodeConfig) -> Plan:
    return validate(parse_query(sql), config)


@pytest.fixture
def config_with(tmp_path: Path, customs: Any) -> Any:
    return lambda **toml_args: customs.config_with(tmp_path, **toml_args)


def refusal(spec: pb.QuerySpec | str, config: NodeConfig) -> Refused:
    if isinstance(spec, str):
        spec = parse_query(spec)
    with pytest.raises(Refused) as info:
        validate(spec, config)
    error = info.value
    assert error.node == config.node_id == "douane"
    assert error.message and "\n" not in error.message
    assert f"node {config.node_id}: " in str(error)
    return error


def spec(**fields: object) -> pb.QuerySpec:
    base = pb.QuerySpec(dataset="declarations", aggregates=[pb.Aggregate(function=pb.COUNT, alias="n")])
    base.MergeFrom(pb.QuerySpec(**fields))  # type: ignore[arg-type]
    return base


# ---------------------------------------------------------------- accepted plans


def test_plan_for_a_grouped_query(node_config: NodeConfig) -> None:
    columns = node_config.datasets["declarations"].columns
    assert (columns["port"].domain, columns["year"].domain) == (PORT_DOMAIN, YEAR_DOMAIN)
    plan = plan_for(
        "SELECT port, year, COUNT(*) AS n, COUNT(DISTINCT company), SUM(value), AVG(value) "
        "FROM declarations WHERE goods IN ('drugs') AND year >= 2022 AND date < '2023-01-01' "
        "GROUP BY port, year",
        node_config,
    )
    assert plan.dataset is node_config.datasets["declarations"]
    assert [c.name for c in plan.group_columns] == ["port", "year"]
    # Every key of the public domain, in domain order: the full-domain report relies on this.
    assert plan.keys == tuple((p, y) for p in PORT_DOMAIN for y in YEAR_DOMAIN)
    assert [(a.function, a.alias) for a in plan.aggregates] == [
        (pb.COUNT, "n"),
        (pb.COUNT_DISTINCT, "distinct_company"),
        (pb.SUM, "sum_value"),
        (pb.AVG, "avg_value"),
    ]
    assert [a.column.name if a.column else None for a in plan.aggregates] == [
        None,
        "company",
        "value",
        "value",
    ]
    assert plan.filter is not None and plan.filter.WhichOneof("kind") == "all_of"


def test_plan_without_groups_has_one_empty_key(node_config: NodeConfig) -> None:
    plan = plan_for("SELECT COUNT(*) FROM declarations", node_config)
    assert plan.keys == ((),)
    assert plan.group_columns == ()
    assert plan.filter is None


def test_alias_defaults_to_the_operation(node_config: NodeConfig) -> None:
    plan = validate(spec(aggregates=[pb.Aggregate(function=pb.SUM, column="value")]), node_config)
    assert [a.alias for a in plan.aggregates] == ["n", "sum"]


@pytest.mark.parametrize(
    "where",
    [
        "port = 'Rotterdam'",
        "port <> 'Rotterdam'",
        "port NOT IN ('Rotterdam', 'Moerdijk')",
        "goods = 'x'' OR 1=1 --'",
        "year > 2021",
        "year BETWEEN 2021 AND 2022",
        "year < 1900",  # a range on an integer category need not hit the domain
        "inspected = 1",
        "inspected = TRUE",
        "value > -5 AND value <= 1e6",
        "value BETWEEN 0 AND 100.5",
        "date >= '2022-01-31'",
        "date BETWEEN '2022-01-01' AND '2022-12-31'",
        "NOT (port = 'Rotterdam' OR year = 2021)",
    ],
)
def test_accepted_filters(node_config: NodeConfig, where: str) -> None:
    plan = plan_for(f"SELECT COUNT(*) FROM declarations WHERE {where}", node_config)
    assert plan.filter == parse_query(f"SELECT COUNT(*) FROM declarations WHERE {where}").filter


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("sql", "rule", "column"),
    [
        ("SELECT harbour, COUNT(*) FROM declarations GROUP BY harbour", "unknown_column", "harbour"),
        ("SELECT COUNT(*) FROM declarations WHERE harbour = 'x'", "unknown_column", "harbour"),
        ("SELECT SUM(weight) FROM declarations", "unknown_column", "weight"),
        ("SELECT COUNT(DISTINCT person) FROM declarations", "unknown_column", "person"),
        # Local names are not part of the shared vocabulary.
        ("SELECT COUNT(*) FROM declarations WHERE haven = 'RTM'", "unknown_column", "haven"),
        ("SELECT company, COUNT(*) FROM declarations GROUP BY company", "identifier_column", "company"),
        ("SELECT COUNT(*) FROM declarations WHERE company = '10000001'", "identifier_column", "company"),
        ("SELECT COUNT(*) FROM declarations WHERE company IN ('1', '2')", "identifier_column", "company"),
        (
            "SELECT COUNT(*) FROM declarations WHERE company BETWEEN '1' AND '2'",
            "identifier_column",
            "company",
        ),
        ("SELECT SUM(company) FROM declarations", "identifier_column", "company"),
        ("SELECT AVG(company) FROM declarations", "identifier_column", "company"),
        ("SELECT value, COUNT(*) FROM declarations GROUP BY value", "not_groupable", "value"),
        ("SELECT date, COUNT(*) FROM declarations GROUP BY date", "not_groupable", "date"),
        ("SELECT SUM(port) FROM declarations", "not_numeric", "port"),
        ("SELECT AVG(year) FROM declarations", "not_numeric", "year"),
        ("SELECT SUM(date) FROM declarations", "not_numeric", "date"),
        ("SELECT COUNT(DISTINCT port) FROM declarations", "unsupported_aggregate", "company"),
        ("SELECT COUNT(*) FROM declarations WHERE port = 'Antwerpen'", "value_outside_domain", "port"),
        ("SELECT COUNT(*) FROM declarations WHERE port = 'rotterdam'", "value_outside_domain", "port"),
        ("SELECT COUNT(*) FROM declarations WHERE port = 'RTM'", "value_outside_domain", "port"),
        ("SELECT COUNT(*) FROM declarations WHERE port <> 'Gent'", "value_outside_domain", "port"),
        (
            "SELECT COUNT(*) FROM declarations WHERE port IN ('Rotterdam', 'Antwerpen')",
            "value_outside_domain",
            "port",
        ),
        ("SELECT COUNT(*) FROM declarations WHERE port NOT IN ('Gent')", "value_outside_domain", "port"),
        ("SELECT COUNT(*) FROM declarations WHERE goods = 'x'", "value_outside_domain", "goods"),
        ("SELECT COUNT(*) FROM declarations WHERE year = 2019", "value_outside_domain", "year"),
        ("SELECT COUNT(*) FROM declarations WHERE year IN (2022, 2030)", "value_outside_domain", "year"),
        ("SELECT COUNT(*) FROM declarations WHERE inspected = 2", "value_outside_domain", "inspected"),
        ("SELECT COUNT(*) FROM declarations WHERE value = 'high'", "type_mismatch", "value"),
        ("SELECT COUNT(*) FROM declarations WHERE value IN (1, 'x')", "type_mismatch", "value"),
        ("SELECT COUNT(*) FROM declarations WHERE value BETWEEN 'a' AND 'b'", "type_mismatch", "value"),
        ("SELECT COUNT(*) FROM declarations WHERE date = 2022", "type_mismatch", "date"),
        ("SELECT COUNT(*) FROM declarations WHERE date = '2022-13-01'", "type_mismatch", "date"),
        ("SELECT COUNT(*) FROM declarations WHERE date >= 'yesterday'", "type_mismatch", "date"),
        ("SELECT COUNT(*) FROM declarations WHERE port < 'Rotterdam'", "unsupported_filter", "port"),
        ("SELECT COUNT(*) FROM declarations WHERE port >= 'Amsterdam'", "unsupported_filter", "port"),
        # BETWEEN is a range: on a text category it is refused whatever its bounds are.
        (
            "SELECT COUNT(*) FROM declarations WHERE port BETWEEN 'Amsterdam' AND 'Rotterdam'",
            "unsupported_filter",
            "port",
        ),
        (
            "SELECT COUNT(*) FROM declarations WHERE goods BETWEEN 'Antwerpen' AND 'Gent'",
            "unsupported_filter",
            "goods",
        ),
    ],
)
def test_refusal_names_rule_node_and_column(
    node_config: NodeConfig, sql: str, rule: str, column: str
) -> None:
    error = refusal(sql, node_config)
    assert error.rule == rule, str(error)
    assert column in error.message
    assert "declarations" in error.message


def test_unknown_dataset(node_config: NodeConfig) -> None:
    error = refusal("SELECT COUNT(*) FROM vat_returns", node_config)
    assert error.rule == "dataset_not_exposed"
    assert "vat_returns" in error.message


def test_unexposed_dataset(config_with: Any) -> None:
    config = config_with(exposed=False)
    assert "declarations" in config.datasets
    error = refusal("SELECT COUNT(*) FROM declarations", config)
    assert error.rule == "dataset_not_exposed"
    assert "declarations" in error.message


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("SELECT SUM(value) FROM declarations", "SUM"),
        ("SELECT COUNT(*), AVG(value) FROM declarations", "AVG"),
        ("SELECT COUNT(DISTINCT company) FROM declarations", "COUNT_DISTINCT"),
    ],
)
def test_operation_not_allowed_by_policy(config_with: Any, sql: str, operation: str) -> None:
    config = config_with(dataset_policy='operations = ["count"]')
    error = refusal(sql, config)
    assert error.rule == "operation_not_allowed"
    assert operation in error.message
    # COUNT(*) stays allowed under the same policy.
    assert plan_for("SELECT COUNT(*) FROM declarations", config).aggregates


def test_too_many_groups(config_with: Any) -> None:
    cells = len(PORT_DOMAIN) * len(YEAR_DOMAIN)
    tight = config_with(dataset_policy=f"max_groups = {cells - 1}")
    error = refusal("SELECT port, year, COUNT(*) FROM declarations GROUP BY port, year", tight)
    assert error.rule == "too_many_groups"
    assert str(cells) in error.message and str(cells - 1) in error.message
    # One grouping column fits under the same limit.
    assert len(plan_for("SELECT port, COUNT(*) FROM declarations GROUP BY port", tight).keys) == len(
        PORT_DOMAIN
    )


def test_exactly_max_groups_is_allowed(config_with: Any, customs: Any) -> None:
    cells = len(PORT_DOMAIN) * len(customs.GOODS_DOMAIN)
    config = config_with(dataset_policy=f"max_groups = {cells}")
    plan = plan_for("SELECT port, goods, COUNT(*) FROM declarations GROUP BY port, goods", config)
    assert len(plan.keys) == cells


def test_huge_filter_is_oversized(node_config: NodeConfig) -> None:
    # Built past the SDK, which refuses the same filter before sending it.
    term = pb.Filter(compare=pb.Comparison(column="port", op=pb.EQ, value=pb.Value(text="Rotterdam")))
    query = pb.QuerySpec(dataset="declarations", aggregates=[pb.Aggregate(function=pb.COUNT)])
    query.filter.any_of.items.extend([term] * (MAX_FILTER_TERMS + 1))
    error = refusal(query, node_config)
    assert error.rule == "expression_too_large"
    assert str(MAX_FILTER_TERMS) in error.message


def test_filter_within_the_term_limit_is_accepted(node_config: NodeConfig) -> None:
    # The OR node itself is one term.
    terms = " OR ".join(["port = 'Rotterdam'"] * (MAX_FILTER_TERMS - 1))
    plan = plan_for(f"SELECT COUNT(*) FROM declarations WHERE {terms}", node_config)
    assert plan.filter is not None and len(plan.filter.any_of.items) == MAX_FILTER_TERMS - 1


def _negated(times: int) -> pb.QuerySpec:
    f = pb.Filter(compare=pb.Comparison(column="year", op=pb.EQ, value=pb.Value(integer=2019)))
    for _ in range(times):
        f = pb.Filter(negate=f)
    return pb.QuerySpec(dataset="declarations", aggregates=[pb.Aggregate(function=pb.COUNT)], filter=f)


def test_nested_negation_is_checked_all_the_way_down(node_config: NodeConfig) -> None:
    error = refusal(_negated(MAX_FILTER_DEPTH - 1), node_config)
    assert error.rule == "value_outside_domain"
    assert "2019" in error.message


def test_negation_past_the_depth_bound_is_refused(node_config: NodeConfig) -> None:
    # Protobuf stops decoding at 100 levels; the node refuses far below that, whatever the envelope.
    for times in (MAX_FILTER_DEPTH, 90):
        assert refusal(_negated(times), node_config).rule == "expression_too_deep"


def test_too_many_aggregates(node_config: NodeConfig) -> None:
    aggregates = [pb.Aggregate(function=pb.COUNT, alias=f"n{i}") for i in range(MAX_AGGREGATES + 1)]
    query = pb.QuerySpec(dataset="declarations", aggregates=aggregates)
    assert refusal(query, node_config).rule == "oversized_request"


# ---------------------------------------------------------------- specs no parser would produce


def _compare(op: int = pb.EQ, value: pb.Value | None = None) -> pb.Filter:
    value = pb.Value(integer=2022) if value is None else value
    return pb.Filter(compare=pb.Comparison(column="year", op=op, value=value))


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        (pb.QuerySpec(dataset="declarations"), "raw_rows"),
        (spec(aggregates=[pb.Aggregate(alias="x")]), "malformed_request"),
        (spec(filter=_compare(op=pb.COMPARE_UNSPECIFIED)), "malformed_request"),
        (spec(filter=_compare(op=42)), "malformed_request"),
        (spec(filter=pb.Filter(in_list=pb.InList(column="year"))), "malformed_request"),
        (spec(filter=pb.Filter(all_of=pb.FilterList())), "malformed_request"),
        (spec(filter=pb.Filter(any_of=pb.FilterList(items=[pb.Filter()]))), "malformed_request"),
        (spec(group_by=["port", "port"]), "malformed_request"),
        (spec(group_by=[""]), "unknown_column"),
        (pb.QuerySpec(aggregates=[pb.Aggregate(function=pb.COUNT)]), "dataset_not_exposed"),
    ],
)
def test_hand_built_specs_are_refused(node_config: NodeConfig, query: pb.QuerySpec, rule: str) -> None:
    assert refusal(query, node_config).rule == rule


def test_text_bound_on_integer_category_is_a_type_mismatch(node_config: NodeConfig) -> None:
    error = refusal("SELECT COUNT(*) FROM declarations WHERE year > 'abc'", node_config)
    assert error.rule in {"type_mismatch", "value_outside_domain"}
    assert "text category" not in error.message


def test_empty_filter_value_names_the_node(node_config: NodeConfig) -> None:
    error = refusal(spec(filter=_compare(value=pb.Value())), node_config)
    assert error.rule == "malformed_request"
