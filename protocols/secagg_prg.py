"""Mask expansion and key derivation for secure aggregation (Bonawitz et al. 2017, section 4).

A 32-byte seed becomes an AES-256 key via HKDF-SHA256 (RFC 5869) with the job and the pair in the
info string; AES-CTR with that key is the PRG whose keystream, read as little-endian uint64, is the
mask. Arithmetic is uint64 with natural wraparound, i.e. mod 2^64, which reduces to any 2^bits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

_ZERO_NONCE = bytes(16)  # every derived key is used for exactly one stream, so a fixed IV is safe
_BLOCK = 16
CHUNK_WORDS = 16384  # 128 KiB of keystream per step: stays in L2 while it is added


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


def apply_masks(
    values: npt.NDArray[np.uint64],
    terms: Sequence[tuple[bytes, int]],
    out: npt.NDArray[np.uint64] | None = None,
) -> npt.NDArray[np.uint64]:
    """Return ``values + sum(sign * PRG(key))`` mod 2^64 for (key, sign) terms, sign in {+1, -1}.

    All keystreams advance together over cache-sized chunks, so each block of keystream is added
    while still in cache and the vector is read and written once, however many masks there are.
    Long vectors are split into contiguous parts on all cores: AES-CTR can start at any block, and
    OpenSSL runs without the interpreter lock. ``out`` may be ``values`` itself (in place).
    """
    dim = values.shape[0]
    if out is None:
        out = np.empty(dim, dtype=np.uint64)
    if not terms:
        out[:] = values
        return out
    parts = min(_WORKERS, dim // PARALLEL_MIN_WORDS)
    if parts < 2:
        _mask_range(values, terms, out, 0, dim)
        return out
    # Part boundaries on even words, so each part starts on a whole AES block.
    bounds = [((dim * i // parts) // 2) * 2 for i in range(parts)] + [dim]
    jobs = [_pool().submit(_mask_range, values, terms, out, bounds[i], bounds[i + 1]) for i in range(parts)]
    for job in jobs:
        job.result()
    return out


def _mask_range(
    values: npt.NDArray[np.uint64],
    terms: Sequence[tuple[bytes, int]],
    out: npt.NDArray[np.uint64],
    first: int,
    last: int,
) -> None:
    """Mask ``values[first:last]`` into ``out``; ``first`` is even (a whole AES block)."""
    counter = (first // 2).to_bytes(_BLOCK, "big")  # CTR block index where this part starts
    streams = [
        (Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor(), np.add if sign > 0 else np.subtract)
        for key, sign in terms
    ]
    zeros = bytes(8 * CHUNK_WORDS)
    # update_into needs room for one extra block beyond the input length.
    buf = bytearray(8 * CHUNK_WORDS + _BLOCK - 1)
    words = np.frombuffer(buf, dtype=np.uint64, count=CHUNK_WORDS)
    for start in range(first, last, CHUNK_WORDS):
        stop = min(last, start + CHUNK_WORDS)
        width = stop - start
        src, dst = values[start:stop], out[start:stop]
        pad = zeros if width == CHUNK_WORDS else zeros[: 8 * width]
        view = words if width == CHUNK_WORDS else words[:width]
        for n, (enc, op) in enumerate(streams):
            enc.update_into(pad, buf)
            op(src if n == 0 else dst, view, out=dst)


_WORKERS = max(1, min(4, os.cpu_count() or 1))
PARALLEL_MIN_WORDS = 1 << 17  # below ~1 MiB per part, thread hand-off costs more than it saves
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="secagg-mask")
        return _POOL
