from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompareOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARE_UNSPECIFIED: _ClassVar[CompareOp]
    EQ: _ClassVar[CompareOp]
    NE: _ClassVar[CompareOp]
    LT: _ClassVar[CompareOp]
    LE: _ClassVar[CompareOp]
    GT: _ClassVar[CompareOp]
    GE: _ClassVar[CompareOp]

class AggregateFunction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_UNSPECIFIED: _ClassVar[AggregateFunction]
    COUNT: _ClassVar[AggregateFunction]
    COUNT_DISTINCT: _ClassVar[AggregateFunction]
    SUM: _ClassVar[AggregateFunction]
    AVG: _ClassVar[AggregateFunction]
    VARIANCE: _ClassVar[AggregateFunction]
    STDDEV: _ClassVar[AggregateFunction]
    PERCENTILE: _ClassVar[AggregateFunction]

class ColumnKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_UNSPECIFIED: _ClassVar[ColumnKind]
    CATEGORY: _ClassVar[ColumnKind]
    NUMERIC: _ClassVar[ColumnKind]
    DATE: _ClassVar[ColumnKind]
    IDENTIFIER: _ClassVar[ColumnKind]

class OverlapPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLAP_PHASE_UNSPECIFIED: _ClassVar[OverlapPhase]
    OVERLAP_PREPARE: _ClassVar[OverlapPhase]
    OVERLAP_BLIND: _ClassVar[OverlapPhase]
    OVERLAP_REBLIND: _ClassVar[OverlapPhase]
    OVERLAP_FETCH: _ClassVar[OverlapPhase]
    OVERLAP_DECRYPT: _ClassVar[OverlapPhase]
    OVERLAP_FINISH: _ClassVar[OverlapPhase]
    OVERLAP_MIX: _ClassVar[OverlapPhase]
COMPARE_UNSPECIFIED: CompareOp
EQ: CompareOp
NE: CompareOp
LT: CompareOp
LE: CompareOp
GT: CompareOp
GE: CompareOp
AGGREGATE_UNSPECIFIED: AggregateFunction
COUNT: AggregateFunction
COUNT_DISTINCT: AggregateFunction
SUM: AggregateFunction
AVG: AggregateFunction
VARIANCE: AggregateFunction
STDDEV: AggregateFunction
PERCENTILE: AggregateFunction
COLUMN_UNSPECIFIED: ColumnKind
CATEGORY: ColumnKind
NUMERIC: ColumnKind
DATE: ColumnKind
IDENTIFIER: ColumnKind
OVERLAP_PHASE_UNSPECIFIED: OverlapPhase
OVERLAP_PREPARE: OverlapPhase
OVERLAP_BLIND: OverlapPhase
OVERLAP_REBLIND: OverlapPhase
OVERLAP_FETCH: OverlapPhase
OVERLAP_DECRYPT: OverlapPhase
OVERLAP_FINISH: OverlapPhase
OVERLAP_MIX: OverlapPhase

class Value(_message.Message):
    __slots__ = ("text", "integer", "real", "boolean")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    text: str
    integer: int
    real: float
    boolean: bool
    def __init__(self, text: _Optional[str] = ..., integer: _Optional[int] = ..., real: _Optional[float] = ..., boolean: _Optional[bool] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("column", "op", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: str
    op: CompareOp
    value: Value
    def __init__(self, column: _Optional[str] = ..., op: _Optional[_Union[CompareOp, str]] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class InList(_message.Message):
    __slots__ = ("column", "values", "negated")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NEGATED_FIELD_NUMBER: _ClassVar[int]
    column: str
    values: _containers.RepeatedCompositeFieldContainer[Value]
    negated: bool
    def __init__(self, column: _Optional[str] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., negated: _Optional[bool] = ...) -> None: ...

class Between(_message.Message):
    __slots__ = ("column", "low", "high")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    column: str
    low: Value
    high: Value
    def __init__(self, column: _Optional[str] = ..., low: _Optional[_Union[Value, _Mapping]] = ..., high: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, items: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("compare", "in_list", "between", "all_of", "any_of", "negate")
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    IN_LIST_FIELD_NUMBER: _ClassVar[int]
    BETWEEN_FIELD_NUMBER: _ClassVar[int]
    ALL_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NEGATE_FIELD_NUMBER: _ClassVar[int]
    compare: Comparison
    in_list: InList
    between: Between
    all_of: FilterList
    any_of: FilterList
    negate: Filter
    def __init__(self, compare: _Optional[_Union[Comparison, _Mapping]] = ..., in_list: _Optional[_Union[InList, _Mapping]] = ..., between: _Optional[_Union[Between, _Mapping]] = ..., all_of: _Optional[_Union[FilterList, _Mapping]] = ..., any_of: _Optional[_Union[FilterList, _Mapping]] = ..., negate: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class ClampBounds(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class Aggregate(_message.Message):
    __slots__ = ("function", "column", "alias", "bounds", "per_node", "quantile", "bound_quantile")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    PER_NODE_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    BOUND_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    function: AggregateFunction
    column: str
    alias: str
    bounds: ClampBounds
    per_node: bool
    quantile: float
    bound_quantile: float
    def __init__(self, function: _Optional[_Union[AggregateFunction, str]] = ..., column: _Optional[str] = ..., alias: _Optional[str] = ..., bounds: _Optional[_Union[ClampBounds, _Mapping]] = ..., per_node: _Optional[bool] = ..., quantile: _Optional[float] = ..., bound_quantile: _Optional[float] = ...) -> None: ...

class DerivedKey(_message.Message):
    __slots__ = ("alias", "column", "transform", "width", "low", "high", "buckets", "part")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    alias: str
    column: str
    transform: str
    width: float
    low: float
    high: float
    buckets: int
    part: str
    def __init__(self, alias: _Optional[str] = ..., column: _Optional[str] = ..., transform: _Optional[str] = ..., width: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., buckets: _Optional[int] = ..., part: _Optional[str] = ...) -> None: ...

class PrivacyRequest(_message.Message):
    __slots__ = ("epsilon", "rho", "bound_share")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    BOUND_SHARE_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    rho: float
    bound_share: float
    def __init__(self, epsilon: _Optional[float] = ..., rho: _Optional[float] = ..., bound_share: _Optional[float] = ...) -> None: ...

class QuerySpec(_message.Message):
    __slots__ = ("dataset", "node", "group_by", "aggregates", "filter", "min_nodes", "privacy", "project", "secure", "max_rows_per_unit", "no_diagnostics", "derived")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    NO_DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    node: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    aggregates: _containers.RepeatedCompositeFieldContainer[Aggregate]
    filter: Filter
    min_nodes: int
    privacy: PrivacyRequest
    project: str
    secure: bool
    max_rows_per_unit: int
    no_diagnostics: bool
    derived: _containers.RepeatedCompositeFieldContainer[DerivedKey]
    def __init__(self, dataset: _Optional[str] = ..., node: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., aggregates: _Optional[_Iterable[_Union[Aggregate, _Mapping]]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., min_nodes: _Optional[int] = ..., privacy: _Optional[_Union[PrivacyRequest, _Mapping]] = ..., project: _Optional[str] = ..., secure: _Optional[bool] = ..., max_rows_per_unit: _Optional[int] = ..., no_diagnostics: _Optional[bool] = ..., derived: _Optional[_Iterable[_Union[DerivedKey, _Mapping]]] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("sum", "count", "noise_sd", "count_noise_sd", "ci_low", "ci_high", "sum_squares", "sum_squares_noise_sd", "shift", "low", "high", "bins", "bins_noise_sd")
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    COUNT_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    SUM_SQUARES_FIELD_NUMBER: _ClassVar[int]
    SUM_SQUARES_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    BINS_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    sum: float
    count: float
    noise_sd: float
    count_noise_sd: float
    ci_low: float
    ci_high: float
    sum_squares: float
    sum_squares_noise_sd: float
    shift: float
    low: float
    high: float
    bins: _containers.RepeatedScalarFieldContainer[float]
    bins_noise_sd: float
    def __init__(self, sum: _Optional[float] = ..., count: _Optional[float] = ..., noise_sd: _Optional[float] = ..., count_noise_sd: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., sum_squares: _Optional[float] = ..., sum_squares_noise_sd: _Optional[float] = ..., shift: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., bins: _Optional[_Iterable[float]] = ..., bins_noise_sd: _Optional[float] = ...) -> None: ...

class GroupResult(_message.Message):
    __slots__ = ("key", "cells", "suppressed", "suppression_rule", "threshold_count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSION_RULE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_COUNT_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedCompositeFieldContainer[Value]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    suppressed: bool
    suppression_rule: str
    threshold_count: float
    def __init__(self, key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ..., suppressed: _Optional[bool] = ..., suppression_rule: _Optional[str] = ..., threshold_count: _Optional[float] = ...) -> None: ...

class Threshold(_message.Message):
    __slots__ = ("kind", "mechanism", "scale", "per_unit", "min_group_size", "suppression")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    mechanism: str
    scale: float
    per_unit: int
    min_group_size: int
    suppression: str
    def __init__(self, kind: _Optional[str] = ..., mechanism: _Optional[str] = ..., scale: _Optional[float] = ..., per_unit: _Optional[int] = ..., min_group_size: _Optional[int] = ..., suppression: _Optional[str] = ...) -> None: ...

class NodeCost(_message.Message):
    __slots__ = ("epsilon", "rho", "delta")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    rho: float
    delta: float
    def __init__(self, epsilon: _Optional[float] = ..., rho: _Optional[float] = ..., delta: _Optional[float] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("name", "aggregate", "value", "noise_sd", "ci_low", "ci_high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    aggregate: str
    value: float
    noise_sd: float
    ci_low: float
    ci_high: float
    def __init__(self, name: _Optional[str] = ..., aggregate: _Optional[str] = ..., value: _Optional[float] = ..., noise_sd: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("groups", "cost", "audit_digest", "threshold", "diagnostics", "chosen_bounds")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupResult]
    cost: NodeCost
    audit_digest: str
    threshold: Threshold
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    chosen_bounds: _containers.RepeatedCompositeFieldContainer[ChosenBound]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupResult, _Mapping]]] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ..., audit_digest: _Optional[str] = ..., threshold: _Optional[_Union[Threshold, _Mapping]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., chosen_bounds: _Optional[_Iterable[_Union[ChosenBound, _Mapping]]] = ...) -> None: ...

class ChosenBound(_message.Message):
    __slots__ = ("aggregate", "lower", "upper", "epsilon", "node")
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    aggregate: str
    lower: float
    upper: float
    epsilon: float
    node: str
    def __init__(self, aggregate: _Optional[str] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., epsilon: _Optional[float] = ..., node: _Optional[str] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("node", "rule", "reason", "cost")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    node: str
    rule: str
    reason: str
    cost: NodeCost
    def __init__(self, node: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ...) -> None: ...

class ColumnInfo(_message.Message):
    __slots__ = ("name", "kind", "domain", "lower", "upper", "id_type", "description", "first_day", "last_day")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FIRST_DAY_FIELD_NUMBER: _ClassVar[int]
    LAST_DAY_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ColumnKind
    domain: _containers.RepeatedCompositeFieldContainer[Value]
    lower: float
    upper: float
    id_type: str
    description: str
    first_day: str
    last_day: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ColumnKind, str]] = ..., domain: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., id_type: _Optional[str] = ..., description: _Optional[str] = ..., first_day: _Optional[str] = ..., last_day: _Optional[str] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("node", "name", "description", "columns", "privacy_unit", "max_rows_per_unit", "operations", "min_group_size", "controller", "release", "secagg_verify_key", "default_epsilon", "max_epsilon", "dp_required")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_UNIT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_VERIFY_KEY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_EPSILON_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DP_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    node: str
    name: str
    description: str
    columns: _containers.RepeatedCompositeFieldContainer[ColumnInfo]
    privacy_unit: str
    max_rows_per_unit: int
    operations: _containers.RepeatedScalarFieldContainer[str]
    min_group_size: int
    controller: str
    release: str
    secagg_verify_key: bytes
    default_epsilon: float
    max_epsilon: float
    dp_required: bool
    def __init__(self, node: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ColumnInfo, _Mapping]]] = ..., privacy_unit: _Optional[str] = ..., max_rows_per_unit: _Optional[int] = ..., operations: _Optional[_Iterable[str]] = ..., min_group_size: _Optional[int] = ..., controller: _Optional[str] = ..., release: _Optional[str] = ..., secagg_verify_key: _Optional[bytes] = ..., default_epsilon: _Optional[float] = ..., max_epsilon: _Optional[float] = ..., dp_required: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "datasets", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    version: str
    def __init__(self, node_id: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms",)
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    def __init__(self, sent_unix_ms: _Optional[int] = ...) -> None: ...

class BudgetQuery(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class BudgetLine(_message.Message):
    __slots__ = ("node", "dataset", "project", "total_epsilon", "spent_epsilon", "remaining_epsilon", "delta", "releases")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPSILON_FIELD_NUMBER: _ClassVar[int]
    SPENT_EPSILON_FIELD_NUMBER: _ClassVar[int]
    REMAINING_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    node: str
    dataset: str
    project: str
    total_epsilon: float
    spent_epsilon: float
    remaining_epsilon: float
    delta: float
    releases: int
    def __init__(self, node: _Optional[str] = ..., dataset: _Optional[str] = ..., project: _Optional[str] = ..., total_epsilon: _Optional[float] = ..., spent_epsilon: _Optional[float] = ..., remaining_epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., releases: _Optional[int] = ...) -> None: ...

class BudgetReport(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[BudgetLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[BudgetLine, _Mapping]]] = ...) -> None: ...

class SecureConfig(_message.Message):
    __slots__ = ("node_ids", "verify_keys", "threshold", "neighbours", "dim", "bits", "max_rows_per_unit")
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_KEYS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    verify_keys: _containers.RepeatedScalarFieldContainer[bytes]
    threshold: int
    neighbours: int
    dim: int
    bits: int
    max_rows_per_unit: int
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ..., verify_keys: _Optional[_Iterable[bytes]] = ..., threshold: _Optional[int] = ..., neighbours: _Optional[int] = ..., dim: _Optional[int] = ..., bits: _Optional[int] = ..., max_rows_per_unit: _Optional[int] = ...) -> None: ...

class SecureStep(_message.Message):
    __slots__ = ("job_id", "round", "payload", "config", "query")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    payload: bytes
    config: SecureConfig
    query: QuerySpec
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., payload: _Optional[bytes] = ..., config: _Optional[_Union[SecureConfig, _Mapping]] = ..., query: _Optional[_Union[QuerySpec, _Mapping]] = ...) -> None: ...

class GroupKey(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class SecureComponent(_message.Message):
    __slots__ = ("role", "aggregate", "kind", "scale", "mechanism", "noise_scale", "parts", "noise_sd")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    role: str
    aggregate: int
    kind: str
    scale: float
    mechanism: str
    noise_scale: float
    parts: int
    noise_sd: float
    def __init__(self, role: _Optional[str] = ..., aggregate: _Optional[int] = ..., kind: _Optional[str] = ..., scale: _Optional[float] = ..., mechanism: _Optional[str] = ..., noise_scale: _Optional[float] = ..., parts: _Optional[int] = ..., noise_sd: _Optional[float] = ...) -> None: ...

class SecureReply(_message.Message):
    __slots__ = ("job_id", "round", "payload", "keys", "components", "cost", "audit_digest")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    payload: bytes
    keys: _containers.RepeatedCompositeFieldContainer[GroupKey]
    components: _containers.RepeatedCompositeFieldContainer[SecureComponent]
    cost: NodeCost
    audit_digest: str
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., payload: _Optional[bytes] = ..., keys: _Optional[_Iterable[_Union[GroupKey, _Mapping]]] = ..., components: _Optional[_Iterable[_Union[SecureComponent, _Mapping]]] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ..., audit_digest: _Optional[str] = ...) -> None: ...

class OverlapDataset(_message.Message):
    __slots__ = ("node", "dataset", "filter")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    node: str
    dataset: str
    filter: Filter
    def __init__(self, node: _Optional[str] = ..., dataset: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class OverlapAggregate(_message.Message):
    __slots__ = ("group_by", "sum")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    group_by: str
    sum: str
    def __init__(self, group_by: _Optional[str] = ..., sum: _Optional[str] = ...) -> None: ...

class OverlapSpec(_message.Message):
    __slots__ = ("on", "datasets", "privacy", "project", "aggregate", "distinct")
    ON_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    on: str
    datasets: _containers.RepeatedCompositeFieldContainer[OverlapDataset]
    privacy: PrivacyRequest
    project: str
    aggregate: OverlapAggregate
    distinct: QuerySpec
    def __init__(self, on: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[OverlapDataset, _Mapping]]] = ..., privacy: _Optional[_Union[PrivacyRequest, _Mapping]] = ..., project: _Optional[str] = ..., aggregate: _Optional[_Union[OverlapAggregate, _Mapping]] = ..., distinct: _Optional[_Union[QuerySpec, _Mapping]] = ...) -> None: ...

class OverlapStep(_message.Message):
    __slots__ = ("job_id", "phase", "party", "spec", "parties", "next_party", "next_key", "owner", "chunk", "chunk_index", "chunk_count", "paillier_key", "chunk_bytes", "wrap_key")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PARTY_FIELD_NUMBER: _ClassVar[int]
    NEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_KEY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRAP_KEY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    phase: OverlapPhase
    party: str
    spec: OverlapSpec
    parties: int
    next_party: str
    next_key: bytes
    owner: str
    chunk: bytes
    chunk_index: int
    chunk_count: int
    paillier_key: bytes
    chunk_bytes: int
    wrap_key: bytes
    def __init__(self, job_id: _Optional[str] = ..., phase: _Optional[_Union[OverlapPhase, str]] = ..., party: _Optional[str] = ..., spec: _Optional[_Union[OverlapSpec, _Mapping]] = ..., parties: _Optional[int] = ..., next_party: _Optional[str] = ..., next_key: _Optional[bytes] = ..., owner: _Optional[str] = ..., chunk: _Optional[bytes] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., paillier_key: _Optional[bytes] = ..., chunk_bytes: _Optional[int] = ..., wrap_key: _Optional[bytes] = ...) -> None: ...

class OverlapReply(_message.Message):
    __slots__ = ("job_id", "party", "hop_key", "set_size", "malformed", "cost", "audit_digest", "id_type", "sensitivity", "paillier_key", "max_value", "slot_bits", "categories", "chunk", "chunk_index", "chunk_count", "sealed", "decrypted", "check_cost")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    HOP_KEY_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    DECRYPTED_FIELD_NUMBER: _ClassVar[int]
    CHECK_COST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    party: str
    hop_key: bytes
    set_size: int
    malformed: int
    cost: NodeCost
    audit_digest: str
    id_type: str
    sensitivity: int
    paillier_key: bytes
    max_value: int
    slot_bits: int
    categories: _containers.RepeatedCompositeFieldContainer[Value]
    chunk: bytes
    chunk_index: int
    chunk_count: int
    sealed: bool
    decrypted: bytes
    check_cost: NodeCost
    def __init__(self, job_id: _Optional[str] = ..., party: _Optional[str] = ..., hop_key: _Optional[bytes] = ..., set_size: _Optional[int] = ..., malformed: _Optional[int] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ..., audit_digest: _Optional[str] = ..., id_type: _Optional[str] = ..., sensitivity: _Optional[int] = ..., paillier_key: _Optional[bytes] = ..., max_value: _Optional[int] = ..., slot_bits: _Optional[int] = ..., categories: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., chunk: _Optional[bytes] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., sealed: _Optional[bool] = ..., decrypted: _Optional[bytes] = ..., check_cost: _Optional[_Union[NodeCost, _Mapping]] = ...) -> None: ...

class OverlapPatternCount(_message.Message):
    __slots__ = ("datasets", "count", "members")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    count: float
    members: int
    def __init__(self, datasets: _Optional[_Iterable[str]] = ..., count: _Optional[float] = ..., members: _Optional[int] = ...) -> None: ...

class OverlapParty(_message.Message):
    __slots__ = ("dataset", "node", "set_size", "malformed")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    node: str
    set_size: float
    malformed: int
    def __init__(self, dataset: _Optional[str] = ..., node: _Optional[str] = ..., set_size: _Optional[float] = ..., malformed: _Optional[int] = ...) -> None: ...

class OverlapGroup(_message.Message):
    __slots__ = ("key", "count", "sum")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    key: Value
    count: float
    sum: float
    def __init__(self, key: _Optional[_Union[Value, _Mapping]] = ..., count: _Optional[float] = ..., sum: _Optional[float] = ...) -> None: ...

class OverlapRequest(_message.Message):
    __slots__ = ("spec", "timeout_seconds", "progress_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_ID_FIELD_NUMBER: _ClassVar[int]
    spec: OverlapSpec
    timeout_seconds: float
    progress_id: str
    def __init__(self, spec: _Optional[_Union[OverlapSpec, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., progress_id: _Optional[str] = ...) -> None: ...

class ProgressRequest(_message.Message):
    __slots__ = ("progress_id",)
    PROGRESS_ID_FIELD_NUMBER: _ClassVar[int]
    progress_id: str
    def __init__(self, progress_id: _Optional[str] = ...) -> None: ...

class ProgressResponse(_message.Message):
    __slots__ = ("found", "phase", "step", "steps", "detail")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    phase: str
    step: int
    steps: int
    detail: str
    def __init__(self, found: _Optional[bool] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., steps: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class OverlapResponse(_message.Message):
    __slots__ = ("job_id", "ok", "error", "error_rule", "datasets", "patterns", "parties", "nodes", "epsilon", "noise_sd", "ci_half_width", "group_by", "groups", "sum_noise_sd", "sum_ci_half_width")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_RULE_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    CI_HALF_WIDTH_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SUM_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    SUM_CI_HALF_WIDTH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ok: bool
    error: str
    error_rule: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    patterns: _containers.RepeatedCompositeFieldContainer[OverlapPatternCount]
    parties: _containers.RepeatedCompositeFieldContainer[OverlapParty]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    epsilon: float
    noise_sd: float
    ci_half_width: float
    group_by: str
    groups: _containers.RepeatedCompositeFieldContainer[OverlapGroup]
    sum_noise_sd: float
    sum_ci_half_width: float
    def __init__(self, job_id: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., error_rule: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., patterns: _Optional[_Iterable[_Union[OverlapPatternCount, _Mapping]]] = ..., parties: _Optional[_Iterable[_Union[OverlapParty, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ..., epsilon: _Optional[float] = ..., noise_sd: _Optional[float] = ..., ci_half_width: _Optional[float] = ..., group_by: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[OverlapGroup, _Mapping]]] = ..., sum_noise_sd: _Optional[float] = ..., sum_ci_half_width: _Optional[float] = ...) -> None: ...

class Covariate(_message.Message):
    __slots__ = ("column", "bounds", "reference")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    column: str
    bounds: ClampBounds
    reference: Value
    def __init__(self, column: _Optional[str] = ..., bounds: _Optional[_Union[ClampBounds, _Mapping]] = ..., reference: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class TrainerParams(_message.Message):
    __slots__ = ("learning_rate", "local_epochs", "batch_size", "proximal_mu", "l2", "clip_norm", "hidden", "seed", "classes")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    local_epochs: int
    batch_size: int
    proximal_mu: float
    l2: float
    clip_norm: float
    hidden: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    classes: int
    def __init__(self, learning_rate: _Optional[float] = ..., local_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., proximal_mu: _Optional[float] = ..., l2: _Optional[float] = ..., clip_norm: _Optional[float] = ..., hidden: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ..., classes: _Optional[int] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("dataset", "outcome", "covariates", "filter", "trainer", "family", "no_intercept", "max_iterations", "tolerance", "privacy", "project", "params", "min_nodes", "max_rows_per_unit", "node", "event")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    NO_INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    outcome: str
    covariates: _containers.RepeatedCompositeFieldContainer[Covariate]
    filter: Filter
    trainer: str
    family: str
    no_intercept: bool
    max_iterations: int
    tolerance: float
    privacy: PrivacyRequest
    project: str
    params: TrainerParams
    min_nodes: int
    max_rows_per_unit: int
    node: str
    event: Value
    def __init__(self, dataset: _Optional[str] = ..., outcome: _Optional[str] = ..., covariates: _Optional[_Iterable[_Union[Covariate, _Mapping]]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., trainer: _Optional[str] = ..., family: _Optional[str] = ..., no_intercept: _Optional[bool] = ..., max_iterations: _Optional[int] = ..., tolerance: _Optional[float] = ..., privacy: _Optional[_Union[PrivacyRequest, _Mapping]] = ..., project: _Optional[str] = ..., params: _Optional[_Union[TrainerParams, _Mapping]] = ..., min_nodes: _Optional[int] = ..., max_rows_per_unit: _Optional[int] = ..., node: _Optional[str] = ..., event: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class ModelBlock(_message.Message):
    __slots__ = ("name", "length", "scale", "l2", "mechanism", "noise_sd", "parts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    length: int
    scale: float
    l2: float
    mechanism: str
    noise_sd: float
    parts: int
    def __init__(self, name: _Optional[str] = ..., length: _Optional[int] = ..., scale: _Optional[float] = ..., l2: _Optional[float] = ..., mechanism: _Optional[str] = ..., noise_sd: _Optional[float] = ..., parts: _Optional[int] = ...) -> None: ...

class ModelStep(_message.Message):
    __slots__ = ("job_id", "model_id", "iteration", "round", "payload", "config", "spec", "parameters")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_id: str
    iteration: int
    round: int
    payload: bytes
    config: SecureConfig
    spec: ModelSpec
    parameters: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., iteration: _Optional[int] = ..., round: _Optional[int] = ..., payload: _Optional[bytes] = ..., config: _Optional[_Union[SecureConfig, _Mapping]] = ..., spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., parameters: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelReply(_message.Message):
    __slots__ = ("job_id", "iteration", "round", "payload", "blocks", "terms", "limbs", "cost", "audit_digest")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    LIMBS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    iteration: int
    round: int
    payload: bytes
    blocks: _containers.RepeatedCompositeFieldContainer[ModelBlock]
    terms: _containers.RepeatedScalarFieldContainer[str]
    limbs: int
    cost: NodeCost
    audit_digest: str
    def __init__(self, job_id: _Optional[str] = ..., iteration: _Optional[int] = ..., round: _Optional[int] = ..., payload: _Optional[bytes] = ..., blocks: _Optional[_Iterable[_Union[ModelBlock, _Mapping]]] = ..., terms: _Optional[_Iterable[str]] = ..., limbs: _Optional[int] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ..., audit_digest: _Optional[str] = ...) -> None: ...

class ModelRoundRequest(_message.Message):
    __slots__ = ("spec", "model_id", "iteration", "parameters", "timeout_seconds")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    model_id: str
    iteration: int
    parameters: _containers.RepeatedScalarFieldContainer[float]
    timeout_seconds: float
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., model_id: _Optional[str] = ..., iteration: _Optional[int] = ..., parameters: _Optional[_Iterable[float]] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class ModelRoundResponse(_message.Message):
    __slots__ = ("job_id", "model_id", "iteration", "ok", "error", "error_rule", "sums", "blocks", "terms", "nodes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_RULE_FIELD_NUMBER: _ClassVar[int]
    SUMS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_id: str
    iteration: int
    ok: bool
    error: str
    error_rule: str
    sums: _containers.RepeatedScalarFieldContainer[float]
    blocks: _containers.RepeatedCompositeFieldContainer[ModelBlock]
    terms: _containers.RepeatedScalarFieldContainer[str]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    def __init__(self, job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., iteration: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., error_rule: _Optional[str] = ..., sums: _Optional[_Iterable[float]] = ..., blocks: _Optional[_Iterable[_Union[ModelBlock, _Mapping]]] = ..., terms: _Optional[_Iterable[str]] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("spec", "timeout_seconds", "formula")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    timeout_seconds: float
    formula: str
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., formula: _Optional[str] = ...) -> None: ...

class ModelResponse(_message.Message):
    __slots__ = ("job_id", "ok", "error", "error_rule", "terms", "params", "covariance", "deviance", "null_deviance", "n", "iterations", "converged", "dispersion", "log_likelihood", "nodes", "rho", "noise_sd", "deviance_trace", "seconds_nodes", "seconds_secagg", "seconds_solve")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_RULE_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    COVARIANCE_FIELD_NUMBER: _ClassVar[int]
    DEVIANCE_FIELD_NUMBER: _ClassVar[int]
    NULL_DEVIANCE_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    DISPERSION_FIELD_NUMBER: _ClassVar[int]
    LOG_LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    DEVIANCE_TRACE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_NODES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SECAGG_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SOLVE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ok: bool
    error: str
    error_rule: str
    terms: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.RepeatedScalarFieldContainer[float]
    covariance: _containers.RepeatedScalarFieldContainer[float]
    deviance: float
    null_deviance: float
    n: float
    iterations: int
    converged: bool
    dispersion: float
    log_likelihood: float
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    rho: float
    noise_sd: _containers.RepeatedScalarFieldContainer[float]
    deviance_trace: _containers.RepeatedScalarFieldContainer[float]
    seconds_nodes: float
    seconds_secagg: float
    seconds_solve: float
    def __init__(self, job_id: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., error_rule: _Optional[str] = ..., terms: _Optional[_Iterable[str]] = ..., params: _Optional[_Iterable[float]] = ..., covariance: _Optional[_Iterable[float]] = ..., deviance: _Optional[float] = ..., null_deviance: _Optional[float] = ..., n: _Optional[float] = ..., iterations: _Optional[int] = ..., converged: _Optional[bool] = ..., dispersion: _Optional[float] = ..., log_likelihood: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ..., rho: _Optional[float] = ..., noise_sd: _Optional[_Iterable[float]] = ..., deviance_trace: _Optional[_Iterable[float]] = ..., seconds_nodes: _Optional[float] = ..., seconds_secagg: _Optional[float] = ..., seconds_solve: _Optional[float] = ...) -> None: ...

class ApprovalQuery(_message.Message):
    __slots__ = ("kind", "query", "overlap", "model")
    KIND_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    query: QuerySpec
    overlap: OverlapSpec
    model: ModelSpec
    def __init__(self, kind: _Optional[str] = ..., query: _Optional[_Union[QuerySpec, _Mapping]] = ..., overlap: _Optional[_Union[OverlapSpec, _Mapping]] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ...) -> None: ...

class ApprovalStatus(_message.Message):
    __slots__ = ("node", "job_hash", "template_hash", "approved", "scope", "approved_by", "approved_at")
    NODE_FIELD_NUMBER: _ClassVar[int]
    JOB_HASH_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_HASH_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    node: str
    job_hash: str
    template_hash: str
    approved: bool
    scope: str
    approved_by: str
    approved_at: str
    def __init__(self, node: _Optional[str] = ..., job_hash: _Optional[str] = ..., template_hash: _Optional[str] = ..., approved: _Optional[bool] = ..., scope: _Optional[str] = ..., approved_by: _Optional[str] = ..., approved_at: _Optional[str] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("job_id", "query", "budget", "secure", "overlap", "model", "approval", "requested_by", "purpose", "legal_basis")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    query: QuerySpec
    budget: BudgetQuery
    secure: SecureStep
    overlap: OverlapStep
    model: ModelStep
    approval: ApprovalQuery
    requested_by: str
    purpose: str
    legal_basis: str
    def __init__(self, job_id: _Optional[str] = ..., query: _Optional[_Union[QuerySpec, _Mapping]] = ..., budget: _Optional[_Union[BudgetQuery, _Mapping]] = ..., secure: _Optional[_Union[SecureStep, _Mapping]] = ..., overlap: _Optional[_Union[OverlapStep, _Mapping]] = ..., model: _Optional[_Union[ModelStep, _Mapping]] = ..., approval: _Optional[_Union[ApprovalQuery, _Mapping]] = ..., requested_by: _Optional[str] = ..., purpose: _Optional[str] = ..., legal_basis: _Optional[str] = ...) -> None: ...

class AuditHead(_message.Message):
    __slots__ = ("seq", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...

class JobResponse(_message.Message):
    __slots__ = ("job_id", "result", "refusal", "budget", "secure", "overlap", "model", "approval", "audit_head")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    result: QueryResult
    refusal: Refusal
    budget: BudgetReport
    secure: SecureReply
    overlap: OverlapReply
    model: ModelReply
    approval: ApprovalStatus
    audit_head: AuditHead
    def __init__(self, job_id: _Optional[str] = ..., result: _Optional[_Union[QueryResult, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., budget: _Optional[_Union[BudgetReport, _Mapping]] = ..., secure: _Optional[_Union[SecureReply, _Mapping]] = ..., overlap: _Optional[_Union[OverlapReply, _Mapping]] = ..., model: _Optional[_Union[ModelReply, _Mapping]] = ..., approval: _Optional[_Union[ApprovalStatus, _Mapping]] = ..., audit_head: _Optional[_Union[AuditHead, _Mapping]] = ...) -> None: ...

class NodeMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "response")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    response: JobResponse
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., response: _Optional[_Union[JobResponse, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("coordinator_id", "heartbeat_seconds")
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    coordinator_id: str
    heartbeat_seconds: int
    def __init__(self, coordinator_id: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("welcome", "job", "reject")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    job: JobRequest
    reject: Refusal
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., job: _Optional[_Union[JobRequest, _Mapping]] = ..., reject: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class CoordinatorEnvelope(_message.Message):
    __slots__ = ("welcome", "job", "reject")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    welcome: bytes
    job: JobEnvelope
    reject: bytes
    def __init__(self, welcome: _Optional[bytes] = ..., job: _Optional[_Union[JobEnvelope, _Mapping]] = ..., reject: _Optional[bytes] = ...) -> None: ...

class JobEnvelope(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class NodesRequest(_message.Message):
    __slots__ = ("forget",)
    FORGET_FIELD_NUMBER: _ClassVar[int]
    forget: str
    def __init__(self, forget: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "connected", "last_seen_unix_ms", "datasets", "connected_since_unix_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    connected: bool
    last_seen_unix_ms: int
    datasets: _containers.RepeatedScalarFieldContainer[str]
    connected_since_unix_ms: int
    def __init__(self, node_id: _Optional[str] = ..., connected: _Optional[bool] = ..., last_seen_unix_ms: _Optional[int] = ..., datasets: _Optional[_Iterable[str]] = ..., connected_since_unix_ms: _Optional[int] = ...) -> None: ...

class NodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ...) -> None: ...

class DatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("spec", "timeout_seconds", "sql")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    spec: QuerySpec
    timeout_seconds: float
    sql: str
    def __init__(self, spec: _Optional[_Union[QuerySpec, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., sql: _Optional[str] = ...) -> None: ...

class CombinedCell(_message.Message):
    __slots__ = ("value", "noise_sd", "ci_low", "ci_high", "suppressed", "clipped", "feasible_low", "feasible_high")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    CLIPPED_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_LOW_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_HIGH_FIELD_NUMBER: _ClassVar[int]
    value: float
    noise_sd: float
    ci_low: float
    ci_high: float
    suppressed: bool
    clipped: bool
    feasible_low: float
    feasible_high: float
    def __init__(self, value: _Optional[float] = ..., noise_sd: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., suppressed: _Optional[bool] = ..., clipped: _Optional[bool] = ..., feasible_low: _Optional[float] = ..., feasible_high: _Optional[float] = ...) -> None: ...

class CombinedRow(_message.Message):
    __slots__ = ("key", "cells", "suppressed", "suppressed_by")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_BY_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedCompositeFieldContainer[Value]
    cells: _containers.RepeatedCompositeFieldContainer[CombinedCell]
    suppressed: bool
    suppressed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., cells: _Optional[_Iterable[_Union[CombinedCell, _Mapping]]] = ..., suppressed: _Optional[bool] = ..., suppressed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeOutcome(_message.Message):
    __slots__ = ("node", "status", "reason", "cost", "audit_digest", "rule")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    node: str
    status: str
    reason: str
    cost: NodeCost
    audit_digest: str
    rule: str
    def __init__(self, node: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., cost: _Optional[_Union[NodeCost, _Mapping]] = ..., audit_digest: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("job_id", "columns", "rows", "nodes", "ok", "error", "error_rule", "diagnostics", "distinct", "chosen_bounds")
    class DistinctEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_RULE_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[CombinedRow]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    ok: bool
    error: str
    error_rule: str
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    distinct: _containers.ScalarMap[str, str]
    chosen_bounds: _containers.RepeatedCompositeFieldContainer[ChosenBound]
    def __init__(self, job_id: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[CombinedRow, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., error_rule: _Optional[str] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., distinct: _Optional[_Mapping[str, str]] = ..., chosen_bounds: _Optional[_Iterable[_Union[ChosenBound, _Mapping]]] = ...) -> None: ...

class JobsRequest(_message.Message):
    __slots__ = ("limit", "project", "page_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    project: str
    page_token: str
    def __init__(self, limit: _Optional[int] = ..., project: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class JobRecord(_message.Message):
    __slots__ = ("job_id", "requested_by", "created_unix_ms", "spec_json", "status", "result_digest", "nodes", "sql", "project", "purpose", "legal_basis", "epsilon", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    requested_by: str
    created_unix_ms: int
    spec_json: str
    status: str
    result_digest: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    sql: str
    project: str
    purpose: str
    legal_basis: str
    epsilon: float
    error: str
    def __init__(self, job_id: _Optional[str] = ..., requested_by: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., spec_json: _Optional[str] = ..., status: _Optional[str] = ..., result_digest: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ..., sql: _Optional[str] = ..., project: _Optional[str] = ..., purpose: _Optional[str] = ..., legal_basis: _Optional[str] = ..., epsilon: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class JobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobRecord]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BudgetRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class BudgetResponse(_message.Message):
    __slots__ = ("lines", "nodes")
    LINES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[BudgetLine]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    def __init__(self, lines: _Optional[_Iterable[_Union[BudgetLine, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ...) -> None: ...

class AuditHeadsRequest(_message.Message):
    __slots__ = ("node", "all")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    node: str
    all: bool
    def __init__(self, node: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class AuditHeadRecord(_message.Message):
    __slots__ = ("node", "seq", "hash", "job_id", "seen_unix_ms")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    hash: str
    job_id: str
    seen_unix_ms: int
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., hash: _Optional[str] = ..., job_id: _Optional[str] = ..., seen_unix_ms: _Optional[int] = ...) -> None: ...

class AuditHeadsResponse(_message.Message):
    __slots__ = ("heads", "forked")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    FORKED_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[AuditHeadRecord]
    forked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, heads: _Optional[_Iterable[_Union[AuditHeadRecord, _Mapping]]] = ..., forked: _Optional[_Iterable[str]] = ...) -> None: ...

class ProjectsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProjectInfo(_message.Message):
    __slots__ = ("name", "purpose", "legal_basis", "members", "expires", "quorum", "approvers", "member", "expired")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    purpose: str
    legal_basis: str
    members: _containers.RepeatedScalarFieldContainer[str]
    expires: str
    quorum: int
    approvers: _containers.RepeatedScalarFieldContainer[str]
    member: bool
    expired: bool
    def __init__(self, name: _Optional[str] = ..., purpose: _Optional[str] = ..., legal_basis: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., expires: _Optional[str] = ..., quorum: _Optional[int] = ..., approvers: _Optional[_Iterable[str]] = ..., member: _Optional[bool] = ..., expired: _Optional[bool] = ...) -> None: ...

class ProjectsResponse(_message.Message):
    __slots__ = ("projects",)
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[ProjectInfo]
    def __init__(self, projects: _Optional[_Iterable[_Union[ProjectInfo, _Mapping]]] = ...) -> None: ...
