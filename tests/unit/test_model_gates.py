"""Model jobs pass the same gates as any job: every round's spec is hashed for approvals, the
round's parameters are not part of it, and later SecAgg steps of a round start nothing."""

from __future__ import annotations

import pytest

from protocols import federation_pb2 as pb
from protocols.canonical import canonical_job_hash, job_kind, job_spec, template_hash
from protocols.spec_text import spec_text


def _spec(value: float) -> pb.ModelSpec:
    spec = pb.ModelSpec(dataset="loans", outcome="defaulted", trainer="glm", family="binomial")
    spec.covariates.add(column="x1")
    spec.filter.compare.CopyFrom(pb.Comparison(column="x1", op=pb.GT, value=pb.Value(real=value)))
    return spec


def test_every_round_is_one_approvable_job_whatever_its_parameters() -> None:
    first = pb.JobRequest(model=pb.ModelStep(round=0, iteration=1, spec=_spec(1.0)))
    later = pb.JobRequest(model=pb.ModelStep(round=0, iteration=5, spec=_spec(1.0), parameters=[0.3, -1.0]))
    assert job_kind(first) == "model"
    assert canonical_job_hash(first) == canonical_job_hash(later) == canonical_job_hash(_spec(1.0))
    approval = pb.ApprovalQuery(kind="model", model=_spec(1.0))
    assert job_spec(approval) == _spec(1.0)
    assert canonical_job_hash(approval) == canonical_job_hash(first)


def test_another_spec_is_another_job_but_the_same_template() -> None:
    assert canonical_job_hash(_spec(1.0)) != canonical_job_hash(_spec(2.0))
    assert template_hash(_spec(1.0)) == template_hash(_spec(2.0))


def test_secagg_steps_of_a_round_start_no_job() -> None:
    step = pb.JobRequest(model=pb.ModelStep(round=3, payload=b"masked"))
    assert job_spec(step) is None
    with pytest.raises(ValueError):
        canonical_job_hash(step)


def test_a_model_job_reads_as_one_line_in_the_history() -> None:
    from google.protobuf.json_format import MessageToDict

    text = spec_text(MessageToDict(_spec(1.0), preserving_proto_field_name=True))
    assert text == "MODEL binomial: defaulted ~ x1 ON loans"


def test_nodes_declaring_a_model_column_differently_are_refused() -> None:
    from coordinator.model_service import same_schema
    from protocols.errors import FederationError

    def info(upper: float, description: str) -> pb.DatasetInfo:
        x1 = pb.ColumnInfo(name="x1", kind=pb.NUMERIC, lower=0.0, upper=upper, description=description)
        y = pb.ColumnInfo(name="defaulted", kind=pb.NUMERIC, lower=0.0, upper=1.0)
        return pb.DatasetInfo(name="loans", columns=[x1, y])

    same_schema(_spec(1.0), [info(100.0, "age"), info(100.0, "leeftijd")])  # descriptions may differ
    with pytest.raises(FederationError) as refused:
        same_schema(_spec(1.0), [info(100.0, "age"), info(120.0, "age")])
    assert refused.value.rule == "model_schema_differs"
