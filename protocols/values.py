"""Conversion between Python scalars and the wire ``Value`` message."""

from __future__ import annotations

from typing import Any

from protocols import federation_pb2 as pb


def to_value(v: Any) -> pb.Value:
    if isinstance(v, bool):
        return pb.Value(boolean=v)
    if isinstance(v, int):
        return pb.Value(integer=v)
    if isinstance(v, float):
        return pb.Value(real=v)
    return pb.Value(text=str(v))


def from_value(v: pb.Value) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)
