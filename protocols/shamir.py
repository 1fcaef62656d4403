"""Shamir t-of-n secret sharing over GF(p), p = 2^521 - 1 (Shamir 1979, "How to share a secret").

Used by secure aggregation (Bonawitz et al. 2017, section 4) to share a node's self-mask seed and
mask-agreement key with its neighbours. Secrets are at most 64 bytes, so they embed in the field
as integers; coefficients come from ``secrets``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from protocols.secagg_errors import SecAggError

PRIME = (1 << 521) - 1  # Mersenne prime M521: larger than any 512-bit secret
SECRET_MAX_BYTES = 64
SHARE_VALUE_BYTES = 66  # ceil(521 / 8)


@dataclass(frozen=True)
class Share:
    """One point (x, f(x)) of the sharing polynomial; x is the holder's 1-based index."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(4, "big") + self.y.to_bytes(SHARE_VALUE_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != 4 + SHARE_VALUE_BYTES:
            raise SecAggError("shamir_share", f"a share is {4 + SHARE_VALUE_BYTES} bytes, got {len(data)}")
        x = int.from_bytes(data[:4], "big")
        y = int.from_bytes(data[4:], "big")
        if not 0 < x < PRIME or y >= PRIME:
            raise SecAggError("shamir_share", "share coordinates are outside the field")
        return cls(x, y)


def split_secret(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, Share]:
    """Share ``secret`` so that any ``threshold`` of the points at ``xs`` recover it, fewer reveal nothing."""
    if len(secret) > SECRET_MAX_BYTES:
        raise SecAggError("shamir_secret", f"secrets are at most {SECRET_MAX_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("shamir_points", "share points must be distinct and non-zero")
    if not 1 <= threshold <= len(xs):
        raise SecAggError("shamir_threshold", f"threshold {threshold} must be between 1 and {len(xs)}")
    # f(0) is the secret; a leading length byte keeps leading zero bytes of the secret.
    coeffs = [int.from_bytes(bytes([len(secret)]) + secret, "big")]
    coeffs += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, Share] = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        shares[x] = Share(x, acc)
    return shares


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # The same holder set recurs for every node being unmasked, so the weights are cached.
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(weights)


def combine_shares(shares: Iterable[Share], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares by Lagrange interpolation at 0."""
    unique = {s.x: s for s in shares}
    if len(unique) < threshold:
        raise SecAggError(
            "secagg_threshold", f"need {threshold} distinct shares to recover a secret, have {len(unique)}"
        )
    chosen = sorted(unique.values(), key=lambda s: s.x)[:threshold]
    weights = _lagrange_at_zero(tuple(s.x for s in chosen))
    value = sum(w * s.y for w, s in zip(weights, chosen, strict=True)) % PRIME
    raw = value.to_bytes(SECRET_MAX_BYTES + 1, "big").lstrip(b"\x00")
    if not raw or raw[0] != len(raw) - 1:
        raise SecAggError("shamir_inconsistent", "shares do not interpolate to a well-formed secret")
    return raw[1:]
