"""Bounds on the size and nesting of a job spec, checked alike by the SDK, the coordinator and each node.

Protocol Buffers decoders refuse a message nested more than 100 levels deep (upb's default
``MaxDepth``). A filter nested just under that passes the party that decoded it and breaks the
next one, whose envelope (``CoordinatorMessage`` > ``JobRequest`` > ``QuerySpec``) adds levels. So
every party refuses a filter deeper than ``MAX_FILTER_DEPTH``, far below the decoder's limit
whatever envelope carries it, and bounds the number of terms, listed values and characters, so a
spec always fits one message, one audit entry and one job-history row.

Each check walks the message without recursion and stops at the first bound it crosses.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protocols import federation_pb2 as pb
from protocols.errors import FederationError

MAX_FILTER_DEPTH = 16  # nested NOT / AND / OR levels
MAX_FILTER_TERMS = 200  # filter terms (comparisons, lists, ranges, NOT, AND, OR) in one spec
MAX_IN_LIST_VALUES = 1000  # values in one IN (...) list
MAX_FILTER_VALUES = 2000  # literal values in one spec, over all its filters
MAX_TEXT_CHARS = 256  # one text literal
MAX_NAME_CHARS = 128  # a dataset, node, column, alias or project name
# Datasets (parties, "node.dataset") in one overlap. The answer holds one count per membership
# pattern, 2^n - 1 of them (4,095 at 12), and the ring costs n^2 blindings per identifier.
MAX_OVERLAP_PARTIES = 12

EXPRESSION_TOO_DEEP = "expression_too_deep"
EXPRESSION_TOO_LARGE = "expression_too_large"
IN_LIST_TOO_LONG = "in_list_too_long"
OVERSIZED_REQUEST = "oversized_request"
MALFORMED_REQUEST = "malformed_request"
TOO_MANY_PARTIES = "too_many_parties"

RULES = {
    EXPRESSION_TOO_DEEP: f"a filter nests NOT, AND and OR more than {MAX_FILTER_DEPTH} levels deep",
    EXPRESSION_TOO_LARGE: (
        f"a spec has more than {MAX_FILTER_TERMS} filter terms or {MAX_FILTER_VALUES} literal values"
    ),
    IN_LIST_TOO_LONG: f"an IN (...) list has more than {MAX_IN_LIST_VALUES} values",
    TOO_MANY_PARTIES: f"an overlap names more than {MAX_OVERLAP_PARTIES} datasets",
}

_SPECS = (
    pb.QuerySpec.DESCRIPTOR.full_name,
    pb.OverlapSpec.DESCRIPTOR.full_name,
    pb.ModelSpec.DESCRIPTOR.full_name,
)
_FILTER = pb.Filter.DESCRIPTOR.full_name


class SpecTooLarge(FederationError):
    """A spec crosses one of the bounds above; ``rule`` names which."""


def _refuse(rule: str, message: str, node: str) -> SpecTooLarge:
    return SpecTooLarge(rule, message, node)


def check_name(value: str, what: str, node: str = "") -> None:
    """A name or label: at most ``MAX_NAME_CHARS`` printable characters."""
    if len(value) > MAX_NAME_CHARS:
        raise _refuse(OVERSIZED_REQUEST, f"{what} is longer than {MAX_NAME_CHARS} characters", node)
    if not value.isprintable():
        raise _refuse(MALFORMED_REQUEST, f"{what} holds control or non-printable characters", node)


def check_parties(count: int, node: str = "") -> None:
    """An overlap over ``count`` datasets: at least 2 (``malformed_request``), at most
    ``MAX_OVERLAP_PARTIES`` (``too_many_parties``)."""
    if count > MAX_OVERLAP_PARTIES:
        raise _refuse(
            TOO_MANY_PARTIES,
            f"an overlap takes at most {MAX_OVERLAP_PARTIES} datasets (node.dataset), this one names {count}",
            node,
        )
    if count < 2:
        raise _refuse(
            MALFORMED_REQUEST, f"an overlap takes 2 to {MAX_OVERLAP_PARTIES} datasets, got {count}", node
        )


def _check_value(value: pb.Value, node: str) -> None:
    if value.WhichOneof("kind") == "text" and len(value.text) > MAX_TEXT_CHARS:
        raise _refuse(OVERSIZED_REQUEST, f"a text value is longer than {MAX_TEXT_CHARS} characters", node)


class _Tally:
    """Terms and values counted over every filter of one spec."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.terms = 0
        self.values = 0

    def add(self, terms: int = 0, values: int = 0) -> None:
        self.terms += terms
        self.values += values
        if self.terms > MAX_FILTER_TERMS:
            raise _refuse(
                EXPRESSION_TOO_LARGE, f"the filter has more than {MAX_FILTER_TERMS} terms", self.node
            )
        if self.values > MAX_FILTER_VALUES:
            raise _refuse(
                EXPRESSION_TOO_LARGE,
                f"the filters list more than {MAX_FILTER_VALUES} values in all",
                self.node,
            )


def check_filter(root: pb.Filter, node: str = "", tally: _Tally | None = None) -> None:
    """Refuse a filter deeper, larger or longer than the bounds; raise ``SpecTooLarge`` naming the rule."""
    count = tally or _Tally(node)
    stack: list[tuple[pb.Filter, int]] = [(root, 1)]
    while stack:
        f, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            raise _refuse(
                EXPRESSION_TOO_DEEP,
                f"the filter nests NOT, AND and OR more than {MAX_FILTER_DEPTH} levels deep",
                node,
            )
        count.add(terms=1)
        kind = f.WhichOneof("kind")
        if kind == "compare":
            check_name(f.compare.column, "a filter column", node)
            count.add(values=1)
            _check_value(f.compare.value, node)
        elif kind == "in_list":
            check_name(f.in_list.column, "a filter column", node)
            if len(f.in_list.values) > MAX_IN_LIST_VALUES:
                raise _refuse(IN_LIST_TOO_LONG, f"an IN list has more than {MAX_IN_LIST_VALUES} values", node)
            count.add(values=len(f.in_list.values))
            for value in f.in_list.values:
                _check_value(value, node)
        elif kind == "between":
            check_name(f.between.column, "a filter column", node)
            count.add(values=2)
            _check_value(f.between.low, node)
            _check_value(f.between.high, node)
        elif kind in ("all_of", "any_of"):
            stack.extend((item, depth + 1) for item in getattr(f, kind).items)
        elif kind == "negate":
            stack.append((f.negate, depth + 1))


def _fields(message: Message) -> Iterator[tuple[FieldDescriptor, object]]:
    for field, value in message.ListFields():
        if field.is_repeated:
            for item in value:  # type: ignore[attr-defined]
                yield field, item
        else:
            yield field, value


def check_spec(spec: pb.QuerySpec | pb.OverlapSpec | pb.ModelSpec, node: str = "") -> None:
    """Every filter of a query or overlap spec within the bounds, every name a short printable label,
    and no more overlap parties than the cap."""
    if isinstance(spec, pb.OverlapSpec) and len(spec.datasets) > MAX_OVERLAP_PARTIES:
        check_parties(len(spec.datasets), node)
    tally = _Tally(node)
    stack: list[Message] = [spec]
    while stack:
        message = stack.pop()
        for field, value in _fields(message):
            if field.type == FieldDescriptor.TYPE_STRING:
                check_name(str(value), f"the {field.name} name", node)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                assert isinstance(value, Message)
                if value.DESCRIPTOR.full_name == _FILTER:
                    check_filter(value, node, tally)  # type: ignore[arg-type]
                else:
                    stack.append(value)


def check_job(job: pb.JobRequest, node: str = "") -> None:
    """Every query or overlap spec a job carries, wherever it sits in the job, within the bounds."""
    stack: list[Message] = [job]
    while stack:
        message = stack.pop()
        for field, value in _fields(message):
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            assert isinstance(value, Message)
            if value.DESCRIPTOR.full_name in _SPECS:
                check_spec(value, node)  # type: ignore[arg-type]
            else:
                stack.append(value)
