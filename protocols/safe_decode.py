"""Decoding that turns a message the protobuf decoder refuses into a refusal naming a rule.

gRPC hands every received message to a deserializer, and when that raises the call fails as a
whole: a server answers INTERNAL "Exception deserializing request!", and a client of a stream
loses the stream. On the node link that would let one job's content drop a node's link. Here a
message that does not decode becomes an :class:`Undecodable` value instead, which the receiver
refuses like any other bad input: the coordinator answers the call with INVALID_ARGUMENT and the
rule, the node answers the job (identified from the envelope, ``CoordinatorEnvelope``) with a
refusal and keeps its link.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from protocols import federation_pb2 as pb
from protocols.spec_limits import EXPRESSION_TOO_DEEP, MALFORMED_REQUEST


@dataclass(frozen=True)
class Undecodable:
    """A received message the decoder refused; ``job_id`` is set when its envelope names a job."""

    rule: str
    reason: str
    job_id: str = ""

    def __str__(self) -> str:
        return f"{self.reason} [rule: {self.rule}]"


# The decoder's recursion limit (protobuf's default); past it a message does not decode.
DECODER_MAX_DEPTH = 100


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def nesting_depth(descriptor: Descriptor, data: bytes) -> int | None:
    """How deep the message fields of ``data`` nest, read along ``descriptor``'s schema
    (protobuf wire format), or ``None`` when the bytes are not a well-formed message.

    The decoder names neither cause of a failure (protobuf 6 says only "Error parsing message"),
    so a refusal tells "nested too deep" from "garbled" by walking the wire format itself.
    Iterative, so no depth of input can exhaust the Python stack.
    """
    deepest = 0
    stack: list[tuple[Descriptor, bytes, int]] = [(descriptor, data, 1)]
    try:
        while stack:
            desc, body, depth = stack.pop()
            deepest = max(deepest, depth)
            at = 0
            while at < len(body):
                tag, at = _varint(body, at)
                number, wire = tag >> 3, tag & 7
                if wire == 0:
                    _, at = _varint(body, at)
                elif wire == 1:
                    at += 8
                elif wire == 5:
                    at += 4
                elif wire == 2:
                    size, at = _varint(body, at)
                    if at + size > len(body):
                        return None
                    field = desc.fields_by_number.get(number)
                    if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                        stack.append((field.message_type, body[at : at + size], depth + 1))
                    at += size
                else:
                    return None
                if at > len(body):
                    return None
    except ValueError:
        return None
    return deepest


def _undecodable(
    exc: DecodeError, job_id: str = "", descriptor: Descriptor | None = None, data: bytes = b""
) -> Undecodable:
    depth = nesting_depth(descriptor, data) if descriptor is not None else None
    if "MaxDepth" in str(exc) or (depth is not None and depth > DECODER_MAX_DEPTH):
        return Undecodable(
            EXPRESSION_TOO_DEEP, "the message is nested deeper than the decoder allows", job_id
        )
    return Undecodable(MALFORMED_REQUEST, "the message cannot be decoded", job_id)


def decoder(cls: type[Message]) -> Callable[[bytes], Any]:
    """A gRPC deserializer for ``cls`` that returns :class:`Undecodable` instead of raising."""

    def decode(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _undecodable(exc, descriptor=cls.DESCRIPTOR, data=data)

    return decode


def decode_coordinator_message(data: bytes) -> pb.CoordinatorMessage | Undecodable:
    """A ``CoordinatorMessage``, or :class:`Undecodable` carrying the id of the job it held."""
    try:
        return pb.CoordinatorMessage.FromString(data)
    except DecodeError as exc:
        try:
            # The envelope keeps the job as unparsed bytes past its id: no depth to exceed.
            envelope = pb.CoordinatorEnvelope.FromString(data)
            job_id = envelope.job.job_id if envelope.WhichOneof("kind") == "job" else ""
        except DecodeError:
            job_id = ""
        return _undecodable(exc, job_id, pb.CoordinatorMessage.DESCRIPTOR, data)


def node_link_connect(channel: grpc.Channel) -> Any:
    """``NodeLink.Connect`` on ``channel``, decoding what the coordinator sends with the decoder above."""
    return channel.stream_stream(
        "/federation.v1.NodeLink/Connect",
        request_serializer=pb.NodeMessage.SerializeToString,
        response_deserializer=decode_coordinator_message,
    )


def _refusing(
    method: Callable[[Any, grpc.ServicerContext], Any],
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        return method(request, context)

    return handle


def add_analyst_service(servicer: Any, server: grpc.Server) -> None:
    """Register the Analyst service like the generated code does, with refusing decoders."""
    service = pb.DESCRIPTOR.services_by_name["Analyst"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _refusing(getattr(servicer, method.name)),
            request_deserializer=decoder(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
