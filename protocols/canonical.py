"""Canonical hashes of a job spec, so coordinator, nodes and the CLI name the same job alike.

A job's hash is SHA-256 (FIPS 180-4) over the spec's canonical JSON: the protobuf JSON mapping with
proto field names, default values left out, keys sorted and no whitespace (in the spirit of JCS,
RFC 8785), prefixed with the message type. The job id is not part of the spec, so the same spec
submitted twice is the same job; any change to the spec (a filter value, the epsilon, the project)
gives another hash and so voids an approval of the old one.

A template hash blanks every filter value first: one approval then covers a query that is asked
again with other values (docs/projects.md).
"""

from __future__ import annotations

import hashlib
import json

from google.protobuf.json_format import MessageToDict

from protocols import federation_pb2 as pb

Spec = pb.QuerySpec | pb.OverlapSpec | pb.ModelSpec
JOB_KINDS = ("query", "secure", "overlap", "model")


def job_spec(job: pb.JobRequest | pb.ApprovalQuery | Spec) -> Spec | None:
    """The spec a job runs, or ``None`` for a message that starts no job (a later protocol step)."""
    if isinstance(job, pb.QuerySpec | pb.OverlapSpec | pb.ModelSpec):
        return job
    if isinstance(job, pb.ApprovalQuery):
        if job.kind == "model":
            return job.model
        return job.overlap if job.kind == "overlap" else job.query
    kind = job.WhichOneof("kind")
    if kind == "query":
        return job.query
    if kind == "secure" and job.secure.round == 0:
        return job.secure.query
    if kind == "overlap" and job.overlap.phase == pb.OVERLAP_PREPARE:
        return job.overlap.spec
    if kind == "model" and job.model.round == 0:
        # Every round of a model job starts a release: each is checked against its spec.
        return job.model.spec
    if kind == "approval":
        return job_spec(job.approval)
    return None


def job_kind(job: pb.JobRequest) -> str:
    """The kind an officer's approval rules speak of: query, secure or overlap ('' for other messages)."""
    kind = job.WhichOneof("kind")
    if kind == "approval":
        return job.approval.kind
    return kind if kind in JOB_KINDS else ""


def canonical_json(spec: Spec) -> str:
    body = MessageToDict(spec, preserving_proto_field_name=True)
    return json.dumps(
        {"type": spec.DESCRIPTOR.full_name, "spec": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def canonical_job_hash(job: pb.JobRequest | pb.ApprovalQuery | Spec) -> str:
    """SHA-256 hex of the job's canonical spec; ``ValueError`` if the message starts no job."""
    spec = job_spec(job)
    if spec is None:
        raise ValueError("this message carries no job spec to hash")
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def template_of(spec: Spec) -> Spec:
    """A copy of ``spec`` with every filter value blanked; columns, operators and shape are kept."""
    copy = type(spec)()
    copy.CopyFrom(spec)
    if isinstance(copy, pb.QuerySpec | pb.ModelSpec):
        if copy.HasField("filter"):
            _blank(copy.filter)
    else:
        for item in copy.datasets:
            if item.HasField("filter"):
                _blank(item.filter)
    return copy


def template_hash(job: pb.JobRequest | pb.ApprovalQuery | Spec) -> str:
    """SHA-256 hex of the job's template (filter values blanked)."""
    spec = job_spec(job)
    if spec is None:
        raise ValueError("this message carries no job spec to hash")
    return canonical_job_hash(template_of(spec))


def _blank(node: pb.Filter) -> None:
    kind = node.WhichOneof("kind")
    if kind == "compare":
        node.compare.value.Clear()
    elif kind == "in_list":
        for value in node.in_list.values:
            value.Clear()
    elif kind == "between":
        node.between.low.Clear()
        node.between.high.Clear()
    elif kind in ("all_of", "any_of"):
        for item in getattr(node, kind).items:
            _blank(item)
    elif kind == "negate":
        _blank(node.negate)
