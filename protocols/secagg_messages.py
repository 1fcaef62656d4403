"""Round messages of secure aggregation as plain dataclasses with a byte encoding.

Every message names its job and its round, so a transport can carry the bytes opaquely and the
receiver can refuse anything replayed from another job or another round. The layout is a magic
tag, a kind byte, a round byte and length-prefixed fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from protocols.lazy import lazy_module
from protocols.secagg_errors import SecAggError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

MAGIC = b"SAG1"
ROUND_ADVERTISE = 1
ROUND_SHARE_KEYS = 2
ROUND_MASKED_INPUT = 3
ROUND_UNMASK = 4


def pack(*fields: bytes) -> bytes:
    """Length-prefixed concatenation; unambiguous, so it is also what gets signed."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def unpack(data: bytes) -> list[bytes]:
    fields, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise SecAggError("secagg_malformed", "truncated field header")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise SecAggError("secagg_malformed", "field runs past the end of the message")
        fields.append(data[pos : pos + size])
        pos += size
    return fields


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise SecAggError("secagg_malformed", "identifier is not UTF-8") from None


class _Message(ABC):
    KIND: ClassVar[int]
    ROUND: ClassVar[int]

    @abstractmethod
    def _fields(self) -> list[bytes]:
        """The message's fields, in wire order."""

    def to_bytes(self) -> bytes:
        return MAGIC + bytes([self.KIND, self.ROUND]) + pack(*self._fields())

    @classmethod
    @abstractmethod
    def _from_fields(cls, fields: list[bytes]) -> Self:
        """The message from its wire fields."""

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if len(data) < 6 or data[:4] != MAGIC:
            raise SecAggError("secagg_malformed", "not a secure-aggregation message")
        if data[4] != cls.KIND:
            raise SecAggError("secagg_malformed", f"expected a {cls.__name__} message")
        if data[5] != cls.ROUND:
            raise SecAggError(
                "secagg_wrong_round", f"{cls.__name__} must carry round {cls.ROUND}, got {data[5]}"
            )
        try:
            return cls._from_fields(unpack(data[6:]))
        except (ValueError, IndexError) as exc:
            raise SecAggError("secagg_malformed", f"bad {cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class AdvertiseKeys(_Message):
    """Round 1, node -> all: ephemeral X25519 keys, signed with the node's long-term Ed25519 key."""

    KIND: ClassVar[int] = 1
    ROUND: ClassVar[int] = ROUND_ADVERTISE
    job_id: str
    node_id: str
    cipher_public: bytes  # c_u^PK: agrees the key that encrypts shares
    mask_public: bytes  # s_u^PK: agrees the pairwise mask seeds
    signature: bytes

    def signed_payload(self) -> bytes:
        return advertise_payload(self.job_id, self.node_id, self.cipher_public, self.mask_public)

    def _fields(self) -> list[bytes]:
        return [
            self.job_id.encode(),
            self.node_id.encode(),
            self.cipher_public,
            self.mask_public,
            self.signature,
        ]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, node, cpk, spk, sig = f
        return cls(_text(job), _text(node), cpk, spk, sig)


def advertise_payload(job_id: str, node_id: str, cipher_public: bytes, mask_public: bytes) -> bytes:
    return pack(
        b"secagg-advertise-v1",
        job_id.encode(),
        bytes([ROUND_ADVERTISE]),
        node_id.encode(),
        cipher_public,
        mask_public,
    )


@dataclass(frozen=True)
class KeyDirectory(_Message):
    """Round 1, coordinator -> node: the advertisements of every node that took part."""

    KIND: ClassVar[int] = 2
    ROUND: ClassVar[int] = ROUND_ADVERTISE
    job_id: str
    adverts: tuple[AdvertiseKeys, ...]

    def _fields(self) -> list[bytes]:
        return [self.job_id.encode(), pack(*(a.to_bytes() for a in self.adverts))]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, body = f
        return cls(_text(job), tuple(AdvertiseKeys.from_bytes(a) for a in unpack(body)))


@dataclass(frozen=True)
class EncryptedShare:
    """Shares of one node's secrets for one holder, under AES-GCM; the coordinator only relays it."""

    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return pack(self.sender.encode(), self.recipient.encode(), self.nonce, self.ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedShare:
        sender, recipient, nonce, ct = unpack(data)
        return cls(_text(sender), _text(recipient), nonce, ct)


@dataclass(frozen=True)
class ShareKeys(_Message):
    """Round 2, node -> coordinator: encrypted shares for each neighbour."""

    KIND: ClassVar[int] = 3
    ROUND: ClassVar[int] = ROUND_SHARE_KEYS
    job_id: str
    node_id: str
    shares: tuple[EncryptedShare, ...]

    def _fields(self) -> list[bytes]:
        return [self.job_id.encode(), self.node_id.encode(), pack(*(s.to_bytes() for s in self.shares))]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, node, body = f
        return cls(_text(job), _text(node), tuple(EncryptedShare.from_bytes(s) for s in unpack(body)))


@dataclass(frozen=True)
class ShareDelivery(_Message):
    """Round 2, coordinator -> node: the encrypted shares addressed to that node."""

    KIND: ClassVar[int] = 4
    ROUND: ClassVar[int] = ROUND_SHARE_KEYS
    job_id: str
    recipient: str
    shares: tuple[EncryptedShare, ...]

    def _fields(self) -> list[bytes]:
        return [self.job_id.encode(), self.recipient.encode(), pack(*(s.to_bytes() for s in self.shares))]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, node, body = f
        return cls(_text(job), _text(node), tuple(EncryptedShare.from_bytes(s) for s in unpack(body)))


@dataclass(frozen=True)
class MaskedInput(_Message):
    """Round 3, node -> coordinator: the input plus all masks mod 2^64 (little-endian uint64 on the wire)."""

    KIND: ClassVar[int] = 5
    ROUND: ClassVar[int] = ROUND_MASKED_INPUT
    job_id: str
    node_id: str
    vector: npt.NDArray[np.uint64]

    def _fields(self) -> list[bytes]:
        return [self.job_id.encode(), self.node_id.encode(), self.vector.astype("<u8", copy=False).tobytes()]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, node, vec = f
        if len(vec) % 8:
            raise SecAggError("secagg_malformed", "masked vector is not a whole number of 64-bit words")
        return cls(_text(job), _text(node), np.frombuffer(vec, dtype="<u8").astype(np.uint64, copy=False))


@dataclass(frozen=True)
class UnmaskRequest(_Message):
    """Round 4, coordinator -> node: who sent a masked input and who dropped after sharing keys."""

    KIND: ClassVar[int] = 6
    ROUND: ClassVar[int] = ROUND_UNMASK
    job_id: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def _fields(self) -> list[bytes]:
        return [
            self.job_id.encode(),
            pack(*(s.encode() for s in self.survivors)),
            pack(*(d.encode() for d in self.dropped)),
        ]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        job, surv, drop = f
        return cls(_text(job), tuple(_text(s) for s in unpack(surv)), tuple(_text(d) for d in unpack(drop)))


@dataclass(frozen=True)
class UnmaskResponse(_Message):
    """Round 4, node -> coordinator: self-mask shares of survivors, mask-key shares of dropped nodes.

    Each entry is (owner node id, encoded Shamir share). A node never sends both kinds for one owner.
    """

    KIND: ClassVar[int] = 7
    ROUND: ClassVar[int] = ROUND_UNMASK
    job_id: str
    node_id: str
    self_mask_shares: tuple[tuple[str, bytes], ...]
    mask_key_shares: tuple[tuple[str, bytes], ...]

    def _fields(self) -> list[bytes]:
        def entries(items: tuple[tuple[str, bytes], ...]) -> bytes:
            return pack(*(pack(owner.encode(), share) for owner, share in items))

        return [
            self.job_id.encode(),
            self.node_id.encode(),
            entries(self.self_mask_shares),
            entries(self.mask_key_shares),
        ]

    @classmethod
    def _from_fields(cls, f: list[bytes]) -> Self:
        def entries(raw: bytes) -> tuple[tuple[str, bytes], ...]:
            out = []
            for item in unpack(raw):
                owner, share = unpack(item)
                out.append((_text(owner), share))
            return tuple(out)

        job, node, b, s = f
        return cls(_text(job), _text(node), entries(b), entries(s))


Message = (
    AdvertiseKeys | KeyDirectory | ShareKeys | ShareDelivery | MaskedInput | UnmaskRequest | UnmaskResponse
)
