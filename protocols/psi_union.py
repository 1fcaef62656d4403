"""Union COUNT(DISTINCT unit) per group over the PSI ring, without per-party group counts.

The question: how many distinct entities per group across all parties, each counted once however
many parties hold it. The cardinality protocol of :mod:`protocols.psi` (commutative blinding,
Meadows 1986; Huberman, Franklin and Hogg 1999) counts tokens, but its final sets are tagged by
owner, so a group label in the clear would hand the coordinator every party's count per group.
This protocol keeps labels and owners apart:

1. Each party hashes the pair (group key, normalised identifier) to the group, so tokens of
   different groups never match and an entity in two groups is two unlinkable items. The item's
   group label, padded to a fixed width, is sealed to a per-job key of the coordinator
   (libsodium sealed box): ring parties see only equal-length opaque labels.
2. The (token, sealed label) pairs go round the ring as in :mod:`protocols.psi_sum`; every hop
   re-blinds the token and shuffles the pairs.
3. The last hop of each set re-blinds it and seals every item, token and label together, to the
   coordinator key (so no party recognises its own labels later), then seals the list to the
   mixing party.
4. The mixing party opens the final lists of every owner, concatenates and shuffles them, and
   answers one list: owners are gone before anything is readable.
5. The coordinator opens the items and counts distinct tokens per label.

So the coordinator learns, per group, the union count and how many items the merged list held
(the per-party sum), never one party's count per group; the mixing party learns each set's size,
as every ring party does; no party sees a token blinded by all keys next to a readable label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.bindings import crypto_box_keypair, crypto_box_seal, crypto_box_seal_open
from nacl.bindings.crypto_box import crypto_box_SEALBYTES
from nacl.exceptions import CryptoError

from protocols.psi import TOKEN_BYTES, PsiError, PsiParty, parallel, ring_route, shuffled

__all__ = [
    "ITEM_BYTES",
    "LABEL_BYTES",
    "WRAPPED_BYTES",
    "group_item",
    "group_label",
    "pack_fixed",
    "parse_label",
    "run_union_in_memory",
    "seal_label",
    "seal_labels",
    "union_counts",
    "unpack_fixed",
    "wrap_items",
]

# A group label is canonical JSON of the group key, zero-padded so every sealed label has one length.
LABEL_BYTES = 96
SEALED_LABEL_BYTES = LABEL_BYTES + crypto_box_SEALBYTES
ITEM_BYTES = TOKEN_BYTES + SEALED_LABEL_BYTES
WRAPPED_BYTES = ITEM_BYTES + crypto_box_SEALBYTES
_SEPARATOR = "\x1f"


def group_label(key: Sequence[Any]) -> bytes:
    """The fixed-width label of a group key (a tuple of public-domain values)."""
    text = json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode()
    if len(text) > LABEL_BYTES:
        raise PsiError(f"a group key is longer than {LABEL_BYTES} bytes", rule="group_label")
    return text.ljust(LABEL_BYTES, b"\x00")


def parse_label(label: bytes) -> tuple[Any, ...]:
    """The group key of a label made by :func:`group_label`."""
    try:
        value = json.loads(label.rstrip(b"\x00").decode())
    except (UnicodeDecodeError, ValueError):
        raise PsiError("a group label does not decode", rule="group_label") from None
    if not isinstance(value, list):
        raise PsiError("a group label does not decode", rule="group_label")
    return tuple(value)


def group_item(label: bytes, identifier: str) -> str:
    """What is hashed to the group: the group key and the identifier, so groups never match."""
    return label.rstrip(b"\x00").decode() + _SEPARATOR + identifier


def seal_label(label: bytes, coordinator_key: bytes) -> bytes:
    return _seal(label, coordinator_key)


def seal_labels(labels: Sequence[bytes], coordinator_key: bytes) -> list[bytes]:
    """One sealed box per label (a fresh ephemeral key each, so no two items share anything);
    libsodium releases the GIL, so chunks run on every core."""
    return parallel(lambda chunk: [_seal(label, coordinator_key) for label in chunk], labels)


def _seal(message: bytes, key: bytes) -> bytes:
    try:
        return crypto_box_seal(message, key)
    except (CryptoError, ValueError, TypeError):
        raise PsiError(
            "the coordinator's job key is not an X25519 public key", rule="hop_integrity"
        ) from None


def _open(blob: bytes, public: bytes, private: bytes) -> bytes:
    try:
        return crypto_box_seal_open(blob, public, private)
    except (CryptoError, ValueError, TypeError):
        raise PsiError("an item does not open with the coordinator's job key", rule="hop_integrity") from None


def wrap_items(pairs: Sequence[tuple[bytes, bytes]], coordinator_key: bytes) -> list[bytes]:
    """Last hop: seal each (token, sealed label) to the coordinator, so no party recognises it later."""
    for token, sealed_label in pairs:
        if len(token) != TOKEN_BYTES or len(sealed_label) != SEALED_LABEL_BYTES:
            raise PsiError("an item has the wrong length", rule="token_format")
    return parallel(lambda chunk: [_seal(token + box, coordinator_key) for token, box in chunk], list(pairs))


def pack_fixed(items: Sequence[bytes], width: int) -> bytes:
    if any(len(item) != width for item in items):
        raise PsiError("an item has the wrong length", rule="token_format")
    return b"".join(items)


def unpack_fixed(blob: bytes, width: int) -> list[bytes]:
    if len(blob) % width:
        raise PsiError("a list has a length that is not a whole number of items", rule="token_format")
    return [blob[i : i + width] for i in range(0, len(blob), width)]


def split_item(item: bytes) -> tuple[bytes, bytes]:
    if len(item) != ITEM_BYTES:
        raise PsiError("an item has the wrong length", rule="token_format")
    return item[:TOKEN_BYTES], item[TOKEN_BYTES:]


def union_counts(wrapped: Sequence[bytes], public: bytes, private: bytes) -> tuple[dict[tuple, int], int]:
    """Coordinator: (distinct tokens per group key, items in the merged list)."""

    def open_chunk(chunk: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        out = []
        for blob in chunk:
            token, sealed_label = split_item(_open(blob, public, private))
            out.append((token, _open(sealed_label, public, private)))
        return out

    labels: dict[bytes, tuple] = {}
    seen: dict[bytes, tuple] = {}
    for token, label in parallel(open_chunk, list(wrapped)):
        key = labels.get(label)
        if key is None:
            key = labels[label] = parse_label(label)
        if seen.setdefault(token, key) != key:
            # Tokens are keyed by group: one token under two labels means a party lied about a label.
            raise PsiError("one token carries two group labels", rule="label_integrity")
    counts: dict[tuple, int] = {}
    for key in seen.values():
        counts[key] = counts.get(key, 0) + 1
    return counts, len(wrapped)


def run_union_in_memory(
    sets: Mapping[str, Mapping[tuple, Sequence[str]]], job_id: str
) -> tuple[dict[tuple, int], int]:
    """The whole protocol in one process: ``sets[party][group key]`` lists that party's identifiers.

    The first party mixes. Returns the union count per group key and the merged list's length.
    """
    ring = list(sets)
    if len(ring) < 2:
        raise PsiError("a union needs at least two parties", rule="parties")
    public, private = crypto_box_keypair()
    parties = {pid: PsiParty(pid, job_id) for pid in ring}
    merged: list[bytes] = []
    for owner in ring:
        items: list[tuple[str, bytes]] = []
        for key, identifiers in sets[owner].items():
            label = group_label(key)
            items.extend(
                (group_item(label, i), seal_label(label, public)) for i in dict.fromkeys(identifiers)
            )
        pairs = parties[owner].blind_own_pairs(items)
        for holder in ring_route(ring, owner):
            pairs = parties[holder].reblind_pairs(pairs, owner=owner)
        merged.extend(wrap_items(pairs, public))
    for party in parties.values():
        party.finish()
    return union_counts(shuffled(merged), public, private)
