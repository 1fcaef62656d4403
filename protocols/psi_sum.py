"""Private intersection-sum with cardinality over the PSI ring.

Follows Ion, Kreuter, Nergiz, Patel, Saxena, Seth, Raykova, Shanahan and Yung, "On Deploying
Secure Computing: Private Intersection-Sum-with-Cardinality" (EuroS&P 2020), moved to a
coordinator with many parties. The base party attaches to each identifier a Paillier
ciphertext (Paillier 1999, via ``phe``) of its bounded value and category, under a key only
it holds. The pairs travel the ring of :mod:`protocols.psi` with the tokens; every hop
re-blinds the token, re-randomises the ciphertext and shuffles the pairs. The coordinator
keeps the pairs whose final token occurs in every required party's final set, multiplies
their ciphertexts (a homomorphic sum), adds a uniform mask modulo ``n`` and sends that one
ciphertext to the base party, which decrypts it once. The coordinator removes the mask.

So the coordinator learns the sum and the per-category counts over the intersection, never a
single item's value; the base party learns one uniformly random number and nothing about
which of its items matched. Several values share one plaintext in fixed-width slots, so one
decryption returns the value sum and every category count.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.psi import PsiError, PsiParty, PsiResult, result_from_final_sets, ring_route

if TYPE_CHECKING:
    from phe import paillier

__all__ = [
    "MaskedSum",
    "SumBase",
    "SumLayout",
    "SumResult",
    "masked_intersection_sum",
    "public_key_from_bytes",
    "rerandomiser",
    "run_sum_in_memory",
    "unmask",
]

MIN_KEY_BITS = 1024
DEFAULT_KEY_BITS = 2048


@dataclass(frozen=True)
class SumLayout:
    """How one plaintext holds the value sum (slot 0) and a count per category (slots 1..C).

    Each slot is wide enough for the largest possible total over the base party's whole set,
    so slots never carry into each other.
    """

    max_value: int
    categories: int
    slot_bits: int

    @classmethod
    def for_set(cls, max_value: int, categories: int, set_size: int) -> SumLayout:
        if not isinstance(max_value, int) or isinstance(max_value, bool) or max_value < 0:
            raise PsiError("max_value must be a non-negative integer", rule="value_bounds")
        if not isinstance(categories, int) or isinstance(categories, bool) or categories < 0:
            raise PsiError("categories must be a non-negative integer", rule="category_domain")
        largest = max(set_size * max_value, set_size, 1)
        return cls(max_value=max_value, categories=categories, slot_bits=largest.bit_length())

    @property
    def bits(self) -> int:
        return self.slot_bits * (1 + self.categories)

    def encode(self, value: int, category: int | None) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= self.max_value:
            raise PsiError(f"value {value!r} outside [0, {self.max_value}]", rule="value_bounds")
        plain = value
        if self.categories:
            if (
                not isinstance(category, int)
                or isinstance(category, bool)
                or not 0 <= category < self.categories
            ):
                raise PsiError(
                    f"category {category!r} outside [0, {self.categories})", rule="category_domain"
                )
            plain += 1 << (self.slot_bits * (1 + category))
        elif category is not None:
            raise PsiError("this sum has no categories", rule="category_domain")
        return plain

    def decode(self, plain: int) -> tuple[int, dict[int, int]]:
        if plain >> self.bits:
            raise PsiError("decrypted sum does not fit the layout", rule="sum_integrity")
        mask = (1 << self.slot_bits) - 1
        per_category = {c: (plain >> (self.slot_bits * (1 + c))) & mask for c in range(self.categories)}
        return plain & mask, per_category


@dataclass(frozen=True)
class MaskedSum:
    """The coordinator's state between asking the base party to decrypt and unmasking."""

    ciphertext: bytes
    mask: int
    matched: int


@dataclass(frozen=True)
class SumResult:
    matched: int
    total: int
    per_category: dict[int, int]


def _ciphertext_bytes(public_key: paillier.PaillierPublicKey) -> int:
    return (public_key.nsquare.bit_length() + 7) // 8


def _to_bytes(public_key: paillier.PaillierPublicKey, ciphertext: int) -> bytes:
    return ciphertext.to_bytes(_ciphertext_bytes(public_key), "big")


def _from_bytes(public_key: paillier.PaillierPublicKey, blob: bytes) -> paillier.EncryptedNumber:
    from phe import paillier  # loaded on first use: an idle node never needs Paillier

    if not isinstance(blob, bytes) or len(blob) != _ciphertext_bytes(public_key):
        raise PsiError("ciphertext has the wrong length for this key", rule="ciphertext_format")
    value = int.from_bytes(blob, "big")
    if not 0 < value < public_key.nsquare:
        raise PsiError("ciphertext is outside the ciphertext space", rule="ciphertext_format")
    return paillier.EncryptedNumber(public_key, value, exponent=0)


def public_key_from_bytes(blob: bytes) -> paillier.PaillierPublicKey:
    """The base party's Paillier public key from its wire form (the modulus ``n``, big-endian)."""
    from phe import paillier

    n = int.from_bytes(blob, "big")
    if n.bit_length() < MIN_KEY_BITS or n % 2 == 0:
        raise PsiError(f"Paillier modulus must be odd and at least {MIN_KEY_BITS} bits", rule="key_size")
    return paillier.PaillierPublicKey(n)


def rerandomiser(public_key: paillier.PaillierPublicKey) -> Callable[[bytes], bytes]:
    """A ``refresh`` function for :meth:`PsiParty.reblind_pairs`: same plaintext, fresh randomness."""

    def refresh(blob: bytes) -> bytes:
        number = _from_bytes(public_key, blob)
        number.obfuscate()
        return _to_bytes(public_key, number.ciphertext(be_secure=False))

    return refresh


class SumBase:
    """The base party: owns the Paillier key, encrypts its values, decrypts one masked sum."""

    def __init__(
        self, party: PsiParty, max_value: int, categories: int = 0, key_bits: int = DEFAULT_KEY_BITS
    ) -> None:
        if key_bits < MIN_KEY_BITS:
            raise PsiError(f"Paillier keys need at least {MIN_KEY_BITS} bits", rule="key_size")
        self.party = party
        self._max_value = max_value
        self._categories = categories
        from phe import paillier

        self.public_key, self._private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        self.layout: SumLayout | None = None
        self._decrypted = False

    @property
    def public_key_bytes(self) -> bytes:
        n = self.public_key.n
        return n.to_bytes((n.bit_length() + 7) // 8, "big")

    def blind_own(
        self, values: Mapping[str, int], categories: Mapping[str, int] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Blinded tokens paired with encrypted (value, category) slots, shuffled."""
        layout = SumLayout.for_set(self._max_value, self._categories, len(values))
        if layout.bits >= self.public_key.n.bit_length() - 1:
            raise PsiError(
                f"{layout.bits} plaintext bits needed, key holds {self.public_key.n.bit_length() - 2}",
                rule="sum_capacity",
            )
        cats = categories or {}
        if self._categories and set(cats) != set(values):
            raise PsiError("every identifier needs exactly one category", rule="category_domain")
        plains = [(item, layout.encode(value, cats.get(item))) for item, value in values.items()]
        self.layout = layout
        records = [
            (item, _to_bytes(self.public_key, self.public_key.raw_encrypt(plain))) for item, plain in plains
        ]
        return self.party.blind_own_pairs(records)

    def decrypt_masked(self, ciphertext: bytes) -> int:
        """Decrypt the coordinator's masked sum. Only once per job, so no single item can be opened."""
        if self._decrypted:
            raise PsiError("the masked sum of this job was already decrypted", rule="protocol_order")
        number = _from_bytes(self.public_key, ciphertext)
        self._decrypted = True
        return self._private_key.raw_decrypt(number.ciphertext(be_secure=False))


def masked_intersection_sum(
    base_pairs: Sequence[tuple[bytes, bytes]],
    required_sets: Mapping[str, Sequence[bytes]],
    public_key: paillier.PaillierPublicKey,
) -> MaskedSum:
    """Coordinator: add the ciphertexts of base items found in every required set, then mask."""
    from phe import paillier

    if not required_sets:
        raise PsiError("an intersection sum needs at least one other party", rule="parties")
    present = [set(tokens) for tokens in required_sets.values()]
    total = paillier.EncryptedNumber(public_key, public_key.raw_encrypt(0), exponent=0)
    matched = 0
    for token, blob in base_pairs:
        number = _from_bytes(public_key, blob)
        if all(token in tokens for tokens in present):
            total = total + number
            matched += 1
    mask = secrets.randbelow(public_key.n)
    # raw_encrypt draws fresh randomness, so the product is also re-randomised.
    masked = total + paillier.EncryptedNumber(public_key, public_key.raw_encrypt(mask), exponent=0)
    return MaskedSum(
        ciphertext=_to_bytes(public_key, masked.ciphertext(be_secure=False)), mask=mask, matched=matched
    )


def unmask(
    masked: MaskedSum, decrypted: int, layout: SumLayout, public_key: paillier.PaillierPublicKey
) -> SumResult:
    """Coordinator: remove the mask from the base party's decryption and split the slots."""
    if not isinstance(decrypted, int) or not 0 <= decrypted < public_key.n:
        raise PsiError("decrypted value is outside the plaintext space", rule="sum_integrity")
    total, per_category = layout.decode((decrypted - masked.mask) % public_key.n)
    if layout.categories and sum(per_category.values()) != masked.matched:
        raise PsiError("category counts do not add up to the matched items", rule="sum_integrity")
    return SumResult(matched=masked.matched, total=total, per_category=per_category)


def run_sum_in_memory(
    base_id: str,
    values: Mapping[str, int],
    others: Mapping[str, Iterable[str]],
    job_id: str,
    max_value: int,
    categories: Mapping[str, int] | None = None,
    n_categories: int = 0,
    key_bits: int = DEFAULT_KEY_BITS,
) -> tuple[SumResult, PsiResult]:
    """Whole protocol in one process: the sum over base items held by every party in ``others``."""
    if base_id in others:
        raise PsiError(f"party {base_id} is both base and required party", rule="parties")
    if not others:
        raise PsiError("an intersection sum needs at least one other party", rule="parties")
    ring = [base_id, *others]
    parties = {pid: PsiParty(pid, job_id) for pid in ring}
    base = SumBase(parties[base_id], max_value, n_categories, key_bits)
    # The base party publishes its public key with the job; every hop uses it to re-randomise.
    public_key = public_key_from_bytes(base.public_key_bytes)
    refresh = rerandomiser(public_key)

    pairs = base.blind_own(values, categories)
    for holder in ring_route(ring, base_id):
        pairs = parties[holder].reblind_pairs(pairs, owner=base_id, refresh=refresh)
    final_sets: dict[str, list[bytes]] = {}
    for pid in others:
        tokens = parties[pid].blind_own(others[pid])
        for holder in ring_route(ring, pid):
            tokens = parties[holder].reblind(tokens, owner=pid)
        final_sets[pid] = tokens
    for party in parties.values():
        party.finish()

    masked = masked_intersection_sum(pairs, final_sets, public_key)
    decrypted = base.decrypt_masked(masked.ciphertext)
    if base.layout is None:
        raise PsiError("the base party published no layout", rule="protocol_order")
    result = unmask(masked, decrypted, base.layout, public_key)
    overlap = result_from_final_sets(job_id, {base_id: [token for token, _ in pairs], **final_sets})
    return result, overlap
