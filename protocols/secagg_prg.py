"""Mask expansion and key derivation for secure aggregation (Bonawitz et al. 2017, section 4).

A 32-byte seed becomes an AES-256 key via HKDF-SHA256 (RFC 5869) with the job and the pair in the
info string; AES-CTR with that key is the PRG whose keystream, read as little-endian uint64, is the
mask. Arithmetic is uint64 with natural wraparound, i.e. mod 2^64, which reduces to any 2^bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_ZERO_NONCE = bytes(16)  # every derived key is used for exactly one stream, so a fixed IV is safe
_BLOCK = 16


def derive_key(secret: bytes, purpose: bytes, job_id: str, *parties: str) -> bytes:
    """HKDF-SHA256 of ``secret`` bound to a purpose, the job and the (ordered) parties."""
    info = b"|".join([b"secagg-v1", purpose, job_id.encode(), *(p.encode() for p in parties)])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def pair_secret(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement with a peer's advertised public key."""
    return own.exchange(X25519PublicKey.from_public_bytes(peer_public))


def pairwise_mask_key(shared: bytes, job_id: str, u: str, v: str) -> bytes:
    lo, hi = sorted((u, v))
    return derive_key(shared, b"pairwise-mask", job_id, lo, hi)


def self_mask_key(seed: bytes, job_id: str, u: str) -> bytes:
    return derive_key(seed, b"self-mask", job_id, u)


class MaskStream:
    """Reusable buffers for expanding AES-CTR masks of length ``dim`` without per-mask allocation."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim
        self._zeros = memoryview(bytes(8 * dim))
        # update_into needs room for one extra block beyond the input length.
        self._out = bytearray(8 * dim + _BLOCK - 1)
        self._view = np.frombuffer(self._out, dtype=np.uint64, count=dim)

    def expand(self, key: bytes) -> npt.NDArray[np.uint64]:
        """Keystream of AES-256-CTR under ``key`` as ``dim`` uint64 words (a view, valid until next call)."""
        enc = Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()
        enc.update_into(self._zeros, self._out)
        return self._view

    def add(self, acc: npt.NDArray[np.uint64], key: bytes) -> None:
        np.add(acc, self.expand(key), out=acc)

    def subtract(self, acc: npt.NDArray[np.uint64], key: bytes) -> None:
        np.subtract(acc, self.expand(key), out=acc)
