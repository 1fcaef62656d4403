"""Multi-party private set intersection cardinality by commutative blinding.

Protocol: Diffie-Hellman style commutative encryption, after Meadows (1986) and
Huberman, Franklin and Hogg, "Enhancing privacy and trust in electronic communities" (1999),
extended to many parties along a ring. For one job every party ``p`` draws a fresh secret
scalar ``k_p``. Party ``p`` hashes each of its identifiers into a prime-order group,
``H(x)``, raises it to ``k_p`` and shuffles; the list then travels the ring chosen by the
coordinator, and every other party raises each element to its own key and shuffles again.
After all ``n`` parties have blinded it, each element equals ``H(x)^(k_1 ... k_n)`` whoever
held ``x``, so the coordinator can match final tokens across sets. It receives the final
lists tagged only by the party whose set they came from, and learns the number of elements
per exact membership pattern and the set sizes. See docs/overlap.md for the leakage.

Group: the prime-order subgroup of Curve25519 (order ``2^252 + ...``), elements written as
the 32-byte Montgomery ``u`` coordinate (RFC 7748). Hash to group: SHA-512 of a
domain-separated identifier, mapped by Elligator 2 with the cofactor cleared
(libsodium's ``crypto_core_ed25519_from_uniform``; Bernstein, Hamburg, Krasnova and Lange,
"Elligator", CCS 2013). Elligator 2 is efficiently invertible on its image, so the hash can
still be programmed as a random oracle in the Diffie-Hellman security argument; the
two-map sum of RFC 9380's ``hash_to_curve`` would double the cost for no gain here. Blinding is X25519 (``crypto_scalarmult``) with a
fresh clamped key per job; clamping makes the key a multiple of the cofactor, so every token
stays in the prime-order subgroup. PyNaCl 1.6 exposes no ristretto255 functions; this
subgroup with Montgomery ``u`` encoding gives the same prime-order group without them.

Two jobs over the same data cannot be linked because every key is fresh (DDH); the hash itself
carries no job salt, so a party may run its first step, ``H(x)^k`` for a key drawn for the next
job, before that job arrives (:func:`preblind`, the offline phase). ``H(x)`` never leaves its
owner: the first thing a party sends is already blinded.

Everything here is transport-agnostic: lists of 32-byte tokens in, lists out.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from typing import TYPE_CHECKING, TypeVar

from nacl import bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.utils import random as random_bytes

from protocols.errors import FederationError
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

try:  # the libsodium that PyNaCl bundles, reached through PyNaCl's own cffi module
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - a PyNaCl without it falls back to its public bindings
    _ffi = _lib = None

__all__ = [
    "DOMAIN",
    "TOKEN_BYTES",
    "PsiError",
    "PsiParty",
    "PsiResult",
    "at_least",
    "PreBlinded",
    "hash_to_group",
    "preblind",
    "open_tokens",
    "pack_tokens",
    "pairwise",
    "pattern_counts",
    "result_from_final_sets",
    "ring_route",
    "run_in_memory",
    "seal_tokens",
    "shuffled",
    "unpack_tokens",
]

TOKEN_BYTES = 32
DOMAIN = b"federation/psi/v2/curve25519-u/sha512-elligator2"

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
# Below this many elements one thread is quicker than handing work to a pool.
_MIN_CHUNK = 2048
_SHUFFLE_ATTEMPTS = 8
T = TypeVar("T")


class PsiError(FederationError):
    """A PSI input or protocol step broke a rule; ``rule`` names which."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(rule, message)


def _workers() -> int:
    return max(1, os.cpu_count() or 1)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A long-lived pool per size, so threads start once per process."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="psi")
        return _pools[workers]


def parallel(fn: Callable[[Sequence], list], items: Sequence, workers: int | None = None) -> list:
    """Apply ``fn`` to chunks of ``items`` on a thread pool and concatenate in order.

    libsodium calls through cffi release the GIL, so threads use every core. A process pool
    measured no faster (docs/overlap.md, section 5). It would also need a ``__main__`` guard
    in every caller, and must not fork a node that runs gRPC threads.
    """
    workers = workers or _workers()
    if workers == 1 or len(items) < 2 * _MIN_CHUNK:
        return fn(items)
    # A few chunks per worker keep both cores busy when the machine is shared.
    size = max(_MIN_CHUNK, -(-len(items) // (workers * 4)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    out: list = []
    for part in _pool(workers).map(fn, chunks):
        out.extend(part)
    return out


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not job_id:
        raise PsiError("job id must be a non-empty string", rule="job_id")
    if len(job_id.encode("utf-8")) > 0xFFFF:
        raise PsiError("job id longer than 65535 bytes", rule="job_id")


def shuffled(items: Sequence[T]) -> list[T]:
    """A uniformly random permutation of ``items``, drawn from the OS random source.

    Sorting by independent 64-bit random keys gives every order the same probability when no
    two keys tie (Knuth, TAOCP vol. 2, 3.4.2); a tie, probability below n^2 / 2^65, is redrawn.
    ``random.SystemRandom().shuffle`` gives the same distribution with one system call per
    element, about seven times slower on 100k tokens.
    """
    n = len(items)
    if n < 2:
        return list(items)
    for _ in range(_SHUFFLE_ATTEMPTS):
        keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        ranked = keys[order]
        if not (ranked[1:] == ranked[:-1]).any():
            return [items[i] for i in order.tolist()]
    raise PsiError("the random source repeats itself; refusing to shuffle", rule="randomness")


def _edwards_to_montgomery(points: Sequence[bytes]) -> list[bytes]:
    """Map Edwards25519 points to Curve25519 ``u = (1 + y) / (1 - y)`` (RFC 7748, section 4.1).

    This is field arithmetic only, with one shared inversion for the whole batch
    (Montgomery's trick); it gives the same bytes as libsodium's
    ``crypto_sign_ed25519_pk_to_curve25519``, which would also re-check subgroup membership
    that ``from_uniform`` already guarantees, at about 20 times the cost.
    """
    ys = [int.from_bytes(pt, "little") & _Y_MASK for pt in points]
    dens = [(1 - y) % _P for y in ys]
    if any(d == 0 for d in dens):
        raise PsiError("hash to group produced the neutral element", rule="hash_to_group")
    prefix = [1] * (len(dens) + 1)
    for i, d in enumerate(dens):
        prefix[i + 1] = prefix[i] * d % _P
    inv = pow(prefix[-1], -1, _P) if dens else 1
    out = [b""] * len(dens)
    for i in range(len(dens) - 1, -1, -1):
        inv_d = inv * prefix[i] % _P
        inv = inv * dens[i] % _P
        out[i] = ((1 + ys[i]) * inv_d % _P).to_bytes(TOKEN_BYTES, "little")
    return out


def _hash_chunk(items: Sequence[str]) -> list[bytes]:
    from_uniform = sodium.crypto_core_ed25519_from_uniform
    sha512 = hashlib.sha512
    points = [from_uniform(sha512(DOMAIN + item.encode("utf-8")).digest()[:32]) for item in items]
    return _edwards_to_montgomery(points)


def _check_identifiers(items: Iterable[str]) -> list[str]:
    checked = list(items)
    for item in checked:
        if not isinstance(item, str):
            raise PsiError(f"identifiers must be strings, got {type(item).__name__}", rule="identifier")
    return checked


def hash_to_group(items: Sequence[str], workers: int | None = None) -> list[bytes]:
    """Hash identifiers into the prime-order group, in input order."""
    return parallel(_hash_chunk, _check_identifiers(items), workers)


def _check_tokens(tokens: Sequence[bytes]) -> list[bytes]:
    if isinstance(tokens, (bytes, bytearray, str)):
        raise PsiError("tokens must be a list of 32-byte strings", rule="token_format")
    checked = list(tokens)
    for token in checked:
        if not isinstance(token, bytes) or len(token) != TOKEN_BYTES:
            raise PsiError("every token must be exactly 32 bytes", rule="token_format")
    return checked


def _blind_chunk(key: bytes, tokens: Sequence[bytes]) -> list[bytes]:
    """X25519 of every token under ``key``, in order."""
    if _lib is None:
        scalarmult = sodium.crypto_scalarmult
        try:
            return [scalarmult(key, token) for token in tokens]
        except (CryptoError, RuntimeError):
            raise _not_in_group() from None
    blob = b"".join(tokens)
    if len(blob) != TOKEN_BYTES * len(tokens) or len(key) != 32:
        raise PsiError("every token must be exactly 32 bytes", rule="token_format")
    # One output buffer and pointer offsets instead of PyNaCl's per-call wrapper: the same
    # libsodium function, about 5% less time per token.
    out = _ffi.new("unsigned char[]", len(blob))
    k, src, mult = _ffi.from_buffer(key), _ffi.from_buffer(blob), _lib.crypto_scalarmult
    for offset in range(0, len(blob), TOKEN_BYTES):
        if mult(out + offset, k, src + offset) != 0:
            raise _not_in_group()
    done = _ffi.buffer(out)[:]
    return [done[i : i + TOKEN_BYTES] for i in range(0, len(done), TOKEN_BYTES)]


def _not_in_group() -> PsiError:
    # libsodium refuses points of small order (result all zero): not an honest token.
    return PsiError("a token is not an element of the prime-order group", rule="token_group")


@dataclass(eq=False)
class PreBlinded:
    """The offline phase of one party for one future job: a fresh key and ``H(x)^k`` per identifier.

    Built by :func:`preblind`. The key serves exactly one job: :meth:`claim` hands it out once.
    """

    key: bytes = field(repr=False)
    tokens: dict[str, bytes] = field(repr=False)
    _claimed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.tokens)

    def claim(self) -> bytes:
        with self._lock:
            if self._claimed:
                raise PsiError("a pre-blinded set serves one job only", rule="protocol_order")
            self._claimed = True
            return self.key


def preblind(items: Iterable[str], workers: int | None = None) -> PreBlinded:
    """Hash and blind identifiers under a fresh key, ahead of the job that will use the key."""
    unique = list(dict.fromkeys(items))
    key = random_bytes(32)
    blinded = parallel(partial(_blind_chunk, key), hash_to_group(unique, workers), workers)
    return PreBlinded(key=key, tokens=dict(zip(unique, blinded, strict=True)))


class PsiParty:
    """One party's side of a PSI job: a fresh key, blinding of its own set, re-blinding of others.

    A party object serves exactly one job. ``blind_own`` (or ``blind_own_pairs``) may run once;
    ``reblind`` runs once for each other party's set, and every output list is shuffled with
    the OS random source so the next holder cannot link positions to inputs. The ``_pairs``
    variants carry a payload beside each token, for the intersection-sum protocol. With
    ``prepared`` the party takes the key of a :class:`PreBlinded` set and looks its own tokens up
    there; identifiers the offline phase did not see are blinded on the spot.
    """

    def __init__(
        self,
        party_id: str,
        job_id: str,
        workers: int | None = None,
        prepared: PreBlinded | None = None,
    ) -> None:
        if not isinstance(party_id, str) or not party_id:
            raise PsiError("party id must be a non-empty string", rule="party_id")
        _check_job_id(job_id)
        self.party_id = party_id
        self.job_id = job_id
        self._workers = workers
        self._prepared: dict[str, bytes] | None = None
        if prepared is not None:
            self._key: bytes | None = prepared.claim()
            self._prepared = prepared.tokens
        else:
            # X25519 clamps the key itself; a fresh key per job keeps jobs unlinkable.
            self._key = random_bytes(32)
        self._blinded_own = False
        self._reblinded: set[str] = set()
        self.own_size = 0
        # How many of this party's own identifiers came from the offline phase.
        self.prepared_hits = 0

    def _require_key(self) -> bytes:
        if self._key is None:
            raise PsiError(f"party {self.party_id} has finished this job", rule="protocol_order")
        return self._key

    def _exponentiate(self, points: list[bytes]) -> list[bytes]:
        key = self._require_key()
        return parallel(partial(_blind_chunk, key), points, self._workers)

    def _own_tokens(self, ids: list[str]) -> list[bytes]:
        """``H(x)^k`` for each identifier, in order, from the offline phase where it has them."""
        prepared = self._prepared
        if prepared is None:
            return self._exponentiate(hash_to_group(ids, self._workers))
        missing = [item for item in ids if item not in prepared]
        fresh = dict(zip(missing, self._exponentiate(hash_to_group(missing, self._workers)), strict=True))
        self.prepared_hits = len(ids) - len(missing)
        return [prepared[item] if item in prepared else fresh[item] for item in ids]

    def _start_own(self) -> None:
        self._require_key()
        if self._blinded_own:
            raise PsiError(f"party {self.party_id} already blinded its own set", rule="protocol_order")
        self._blinded_own = True

    def _start_reblind(self, owner: str | None) -> None:
        self._require_key()
        if owner is None:
            return
        if owner == self.party_id:
            raise PsiError(f"party {owner} must not re-blind its own set", rule="protocol_order")
        if owner in self._reblinded:
            raise PsiError(
                f"party {self.party_id} already re-blinded the set of {owner}", rule="protocol_order"
            )
        self._reblinded.add(owner)

    def blind_own(self, items: Iterable[str]) -> list[bytes]:
        """Hash and blind this party's normalised identifiers; duplicates count once."""
        self._start_own()
        unique = list(dict.fromkeys(_check_identifiers(items)))
        self.own_size = len(unique)
        return shuffled(self._own_tokens(unique))

    def reblind(self, tokens: Sequence[bytes], owner: str | None = None) -> list[bytes]:
        """Raise every token of another party's set to this party's key and shuffle."""
        checked = _check_tokens(tokens)
        self._start_reblind(owner)
        return shuffled(self._exponentiate(checked))

    def blind_own_pairs(self, items: Sequence[tuple[str, T]]) -> list[tuple[bytes, T]]:
        """Blind identifiers that each carry a payload (e.g. a ciphertext); pairs stay together.

        Identifiers must be unique here: a payload per entity has to be aggregated first.
        """
        self._start_own()
        ids = _check_identifiers(item for item, _ in items)
        if len(set(ids)) != len(ids):
            raise PsiError("an identifier occurs twice in a set with values", rule="duplicate_identifier")
        tokens = self._own_tokens(ids)
        self.own_size = len(ids)
        return shuffled([(token, payload) for token, (_, payload) in zip(tokens, items, strict=True)])

    def reblind_pairs(
        self,
        pairs: Sequence[tuple[bytes, T]],
        owner: str | None = None,
        refresh: Callable[[T], T] | None = None,
    ) -> list[tuple[bytes, T]]:
        """Re-blind the tokens, pass each payload through ``refresh`` and shuffle the pairs."""
        tokens = _check_tokens([token for token, _ in pairs])
        self._start_reblind(owner)
        blinded = self._exponentiate(tokens)
        payloads = [payload for _, payload in pairs]
        if refresh is not None:
            payloads = [refresh(payload) for payload in payloads]
        return shuffled(list(zip(blinded, payloads, strict=True)))

    def finish(self) -> None:
        """Drop the job key and any pre-blinded tokens; further calls fail."""
        self._key = None
        self._prepared = None


def ring_route(order: Sequence[str], owner: str) -> list[str]:
    """The parties that re-blind ``owner``'s set, in turn, for the ring ``order``."""
    parties = list(order)
    if len(set(parties)) != len(parties):
        raise PsiError("a party appears twice in the ring", rule="ring")
    if owner not in parties:
        raise PsiError(f"party {owner} is not in the ring", rule="ring")
    start = parties.index(owner)
    return parties[start + 1 :] + parties[:start]


def pattern_counts(final_sets: Mapping[str, Sequence[bytes]]) -> dict[frozenset[str], int]:
    """Count elements per exact membership pattern (the parties that hold them).

    Input is the fully blinded, shuffled token list of each party. A token twice in one list
    means a party did not follow the protocol, and is refused.
    """
    parties = list(final_sets)
    bit = {party: 1 << i for i, party in enumerate(parties)}
    membership: dict[bytes, int] = {}
    for party, tokens in final_sets.items():
        mark = bit[party]
        checked = _check_tokens(tokens)
        if len(set(checked)) != len(checked):
            raise PsiError(f"the final set of {party} holds a token twice", rule="duplicate_token")
        for token in checked:
            membership[token] = membership.get(token, 0) | mark
    counts = Counter(membership.values())
    return {frozenset(p for p in parties if mask & bit[p]): count for mask, count in sorted(counts.items())}


def pairwise(
    patterns: Mapping[frozenset[str], int], parties: Iterable[str] | None = None
) -> dict[tuple[str, str], int]:
    """Size of the intersection of every pair of parties."""
    names = sorted(set(parties) if parties is not None else set().union(*patterns) if patterns else set())
    return {
        (a, b): sum(count for pattern, count in patterns.items() if a in pattern and b in pattern)
        for a, b in combinations(names, 2)
    }


def at_least(patterns: Mapping[frozenset[str], int], k: int) -> int:
    """Number of distinct elements held by ``k`` or more parties."""
    if not isinstance(k, int) or k < 1:
        raise PsiError("k must be a positive integer", rule="threshold")
    return sum(count for pattern, count in patterns.items() if len(pattern) >= k)


@dataclass(frozen=True)
class PsiResult:
    """What the coordinator learns: counts per membership pattern and the set sizes."""

    job_id: str
    patterns: dict[frozenset[str], int]
    set_sizes: dict[str, int]
    parties: tuple[str, ...] = field(default=())

    def pairwise(self) -> dict[tuple[str, str], int]:
        return pairwise(self.patterns, self.parties or self.set_sizes)

    def at_least(self, k: int) -> int:
        return at_least(self.patterns, k)

    def held_by_all(self, parties: Iterable[str]) -> int:
        """Number of elements every party in ``parties`` holds (others may hold them too)."""
        wanted = frozenset(parties)
        unknown = wanted - set(self.set_sizes)
        if unknown:
            raise PsiError(f"unknown parties: {', '.join(sorted(unknown))}", rule="party_id")
        return sum(count for pattern, count in self.patterns.items() if wanted <= pattern)

    def union_size(self) -> int:
        return sum(self.patterns.values())


def result_from_final_sets(job_id: str, final_sets: Mapping[str, Sequence[bytes]]) -> PsiResult:
    """Coordinator side: turn the fully blinded sets into a :class:`PsiResult`."""
    patterns = pattern_counts(final_sets)
    return PsiResult(
        job_id=job_id,
        patterns=patterns,
        set_sizes={party: len(tokens) for party, tokens in final_sets.items()},
        parties=tuple(final_sets),
    )


def pack_tokens(tokens: Sequence[bytes]) -> bytes:
    """Concatenate tokens into one message body."""
    return b"".join(_check_tokens(tokens))


def unpack_tokens(blob: bytes) -> list[bytes]:
    """Split a message body made by :func:`pack_tokens`."""
    if len(blob) % TOKEN_BYTES:
        raise PsiError("token message length is not a multiple of 32", rule="token_format")
    return [blob[i : i + TOKEN_BYTES] for i in range(0, len(blob), TOKEN_BYTES)]


def seal_tokens(tokens: Sequence[bytes], recipient: bytes | PublicKey) -> bytes:
    """Encrypt a hop for the next party, so a relaying coordinator sees only ciphertext.

    Uses libsodium sealed boxes (X25519 + XSalsa20-Poly1305) to the recipient's public key.
    """
    key = recipient if isinstance(recipient, PublicKey) else PublicKey(recipient)
    return SealedBox(key).encrypt(pack_tokens(tokens))


def open_tokens(blob: bytes, private_key: PrivateKey) -> list[bytes]:
    """Decrypt a hop sealed with :func:`seal_tokens`."""
    try:
        return unpack_tokens(SealedBox(private_key).decrypt(blob))
    except CryptoError:
        raise PsiError("sealed token message does not open with this key", rule="hop_integrity") from None


def run_in_memory(
    sets: Mapping[str, Iterable[str]],
    job_id: str,
    order: Sequence[str] | None = None,
    workers: int | None = None,
) -> PsiResult:
    """Run the whole ring in one process (tests and benchmarks); returns the coordinator's view."""
    ring = list(order) if order is not None else list(sets)
    if len(ring) < 2:
        raise PsiError("PSI needs at least two parties", rule="parties")
    if sorted(ring) != sorted(sets):
        raise PsiError("the ring must list every party exactly once", rule="ring")
    parties = {pid: PsiParty(pid, job_id, workers) for pid in ring}
    in_flight = {pid: parties[pid].blind_own(sets[pid]) for pid in ring}
    for owner in ring:
        for holder in ring_route(ring, owner):
            in_flight[owner] = parties[holder].reblind(in_flight[owner], owner=owner)
    for party in parties.values():
        party.finish()
    return result_from_final_sets(job_id, {pid: in_flight[pid] for pid in ring})
