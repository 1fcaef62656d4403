"""Secure aggregation: SecAgg (Bonawitz et al. 2017, CCS) with the SecAgg+ k-regular graph (Bell et al. 2020).

Node side ``SecAggClient`` and coordinator side ``SecAggServer`` are transport-agnostic state
machines; each round produces plain message objects (``protocols.secagg_messages``) that also have a
byte encoding:

1. advertise keys: each node sends two ephemeral X25519 public keys signed with its Ed25519 key;
   the coordinator returns to each node the advertisements of its neighbours and its own.
2. share keys: each node Shamir-shares its self-mask seed b_u and its mask key s_u among its
   neighbours and itself, encrypting each holder's shares with AES-GCM; the coordinator routes them.
3. masked input: y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) (mod 2^bits),
   summed over neighbours v that reached round 2.
4. unmask: for each survivor the holders reveal shares of b_u, for each node that dropped after
   round 2 they reveal shares of s_v; the coordinator removes the masks and keeps only the sum.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from protocols import secagg_messages as m
from protocols.fixed_point import FixedPointCodec
from protocols.lazy import lazy_module
from protocols.secagg_errors import SecAggError
from protocols.secagg_graph import neighbour_graph
from protocols.secagg_prg import apply_masks, derive_key, pair_secret, pairwise_mask_key, self_mask_key
from protocols.shamir import Share, combine_shares, split_secret

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

__all__ = [
    "FixedPointCodec",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "run_in_memory",
]

VerifyKey = Ed25519PublicKey | bytes


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one aggregation, identical at every node and at the coordinator.

    ``threshold`` is t: any t holders of a node's shares can unmask it. Each node's holders are its
    graph neighbours plus itself, so t must not exceed the smallest neighbourhood, and must exceed
    half of the largest so that no two disjoint groups could recover both secrets of one node.
    ``neighbours`` is k; k >= n - 1 is classic SecAgg.
    """

    job_id: str
    node_ids: tuple[str, ...]
    threshold: int
    neighbours: int
    dim: int
    bits: int = 64
    graph_seed: bytes = b""
    graph: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)
    _positions: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(self.node_ids)
        if not self.job_id:
            raise SecAggError("secagg_config", "job_id must not be empty")
        if len(ids) < 2 or len(set(ids)) != len(ids) or any(not i for i in ids):
            raise SecAggError("secagg_config", "need at least two distinct, non-empty node ids")
        if self.dim < 1:
            raise SecAggError("secagg_config", f"vector length must be positive, got {self.dim}")
        if not 8 <= self.bits <= 64:
            raise SecAggError("secagg_config", f"bits must be between 8 and 64, got {self.bits}")
        if self.neighbours < 1:
            raise SecAggError("secagg_config", f"neighbours k must be at least 1, got {self.neighbours}")
        seed = self.graph_seed or derive_key(b"public-graph-seed", b"graph", self.job_id)
        graph = neighbour_graph(sorted(ids), self.neighbours, seed)
        smallest = min(len(v) for v in graph.values()) + 1
        largest = max(len(v) for v in graph.values()) + 1
        if not (2 * self.threshold > largest and self.threshold <= smallest):
            raise SecAggError(
                "secagg_config",
                f"threshold must satisfy {largest}/2 < t <= {smallest} for k={self.neighbours}, "
                f"n={len(ids)}; got t={self.threshold}",
            )
        object.__setattr__(self, "node_ids", tuple(sorted(ids)))
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "_positions", {n: i + 1 for i, n in enumerate(self.node_ids)})

    def index(self, node_id: str) -> int:
        """The node's Shamir evaluation point (1-based position in the sorted roster)."""
        try:
            return self._positions[node_id]
        except KeyError:
            raise ValueError(f"{node_id!r} is not in the roster") from None

    @property
    def modulus_mask(self) -> np.uint64:
        return np.uint64((1 << self.bits) - 1)


def _load_verify_key(key: VerifyKey) -> Ed25519PublicKey:
    return key if isinstance(key, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(key)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _check_job(config: SecAggConfig, job_id: str, what: str) -> None:
    if job_id != config.job_id:
        raise SecAggError("secagg_wrong_job", f"{what} belongs to job {job_id!r}, not {config.job_id!r}")


def _verify_advert(
    config: SecAggConfig, keys: Mapping[str, Ed25519PublicKey], advert: m.AdvertiseKeys
) -> None:
    _check_job(config, advert.job_id, f"advertisement of {advert.node_id!r}")
    if advert.node_id not in keys:
        raise SecAggError("secagg_unknown_node", f"{advert.node_id!r} is not a participant of this job")
    if len(advert.cipher_public) != 32 or len(advert.mask_public) != 32:
        raise SecAggError("secagg_malformed", f"advertisement of {advert.node_id!r} has bad key sizes")
    try:
        keys[advert.node_id].verify(advert.signature, advert.signed_payload())
    except InvalidSignature:
        raise SecAggError(
            "secagg_bad_signature", f"advertisement of {advert.node_id!r} is not signed by its key"
        ) from None


def _share_aead_key(own: X25519PrivateKey, peer_public: bytes, job_id: str, u: str, v: str) -> AESGCM:
    lo, hi = sorted((u, v))
    return AESGCM(derive_key(pair_secret(own, peer_public), b"share-encryption", job_id, lo, hi))


def _share_aad(job_id: str, sender: str, recipient: str) -> bytes:
    return m.pack(
        b"secagg-share-v1", job_id.encode(), bytes([m.ROUND_SHARE_KEYS]), sender.encode(), recipient.encode()
    )


class SecAggClient:
    """One node's side of the protocol. Call the four round methods in order, once each."""

    def __init__(
        self,
        config: SecAggConfig,
        node_id: str,
        signing_key: Ed25519PrivateKey,
        verify_keys: Mapping[str, VerifyKey],
    ) -> None:
        if node_id not in config.node_ids:
            raise SecAggError(
                "secagg_unknown_node", f"{node_id!r} is not a participant of job {config.job_id!r}"
            )
        missing = set(config.node_ids) - set(verify_keys)
        if missing:
            raise SecAggError("secagg_config", f"no verification key for {sorted(missing)}")
        self.config = config
        self.node_id = node_id
        self._signing_key = signing_key
        # Only the keys this node checks: its neighbours' and its own (k + 1, not n).
        self._verify = {
            n: _load_verify_key(verify_keys[n]) for n in sorted(config.graph[node_id] | {node_id})
        }
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._round = m.ROUND_ADVERTISE
        self._directory: dict[str, m.AdvertiseKeys] = {}
        self._seed = b""
        self._received: dict[str, tuple[Share, Share]] = {}  # owner -> (b share, s share)
        self._mask_peers: tuple[str, ...] = ()
        self._aeads: dict[str, AESGCM] = {}
        self._pair_keys: dict[str, bytes] = {}

    def _expect(self, expected: int, name: str) -> None:
        if self._round != expected:
            raise SecAggError(
                "secagg_wrong_round", f"{name} belongs to round {expected}, node is at round {self._round}"
            )

    def _enter(self, expected: int, name: str) -> None:
        # Advancing before the work means a failed round cannot be retried: the node fails closed.
        self._expect(expected, name)
        self._round = expected + 1

    def advertise(self) -> m.AdvertiseKeys:
        """Round 1: fresh per-job X25519 keys, authenticated by the long-term signing key."""
        self._enter(m.ROUND_ADVERTISE, "advertise")
        cpk, spk = _raw_public(self._cipher_key), _raw_public(self._mask_key)
        payload = m.advertise_payload(self.config.job_id, self.node_id, cpk, spk)
        return m.AdvertiseKeys(self.config.job_id, self.node_id, cpk, spk, self._signing_key.sign(payload))

    def share_keys(self, directory: m.KeyDirectory | bytes) -> m.ShareKeys:
        """Round 2: verify the neighbours' advertisements, then share b_u and s_u among neighbours and self."""
        if isinstance(directory, bytes):
            directory = m.KeyDirectory.from_bytes(directory)
        self._expect(m.ROUND_SHARE_KEYS, "share_keys")
        _check_job(self.config, directory.job_id, "key directory")
        self._enter(m.ROUND_SHARE_KEYS, "share_keys")
        seen_keys: set[bytes] = set()
        wanted = self.config.graph[self.node_id] | {self.node_id}
        for advert in directory.adverts:
            if advert.node_id not in wanted:
                continue  # a key this node never uses (not a neighbour): neither checked nor kept
            _verify_advert(self.config, self._verify, advert)
            if advert.node_id in self._directory:
                raise SecAggError("secagg_duplicate", f"two advertisements for {advert.node_id!r}")
            if {
                advert.cipher_public,
                advert.mask_public,
            } & seen_keys or advert.cipher_public == advert.mask_public:
                raise SecAggError(
                    "secagg_duplicate", f"advertisement of {advert.node_id!r} reuses a public key"
                )
            seen_keys |= {advert.cipher_public, advert.mask_public}
            self._directory[advert.node_id] = advert
        own = self._directory.get(self.node_id)
        if own is None or own.mask_public != _raw_public(self._mask_key):
            raise SecAggError("secagg_inconsistent", "key directory does not carry this node's own keys")
        live = sorted(self.config.graph[self.node_id] & self._directory.keys())
        self._need(len(live) + 1, "neighbours advertised keys")
        holders = [*live, self.node_id]
        self._seed = os.urandom(32)
        xs = [self.config.index(h) for h in holders]
        t = self.config.threshold
        b_shares = split_secret(self._seed, t, xs)
        s_shares = split_secret(_raw_private(self._mask_key), t, xs)
        me = self.config.index(self.node_id)
        self._received[self.node_id] = (b_shares[me], s_shares[me])
        out = []
        job = self.config.job_id
        for v in live:
            # Both keys depend only on the directory, so round 3 finds them ready.
            self._aeads[v] = _share_aead_key(
                self._cipher_key, self._directory[v].cipher_public, job, self.node_id, v
            )
            shared = pair_secret(self._mask_key, self._directory[v].mask_public)
            self._pair_keys[v] = pairwise_mask_key(shared, job, self.node_id, v)
        for v in live:
            x = self.config.index(v)
            aead = self._aeads[v]
            nonce = os.urandom(12)
            plaintext = m.pack(b_shares[x].to_bytes(), s_shares[x].to_bytes())
            ct = aead.encrypt(nonce, plaintext, _share_aad(self.config.job_id, self.node_id, v))
            out.append(m.EncryptedShare(self.node_id, v, nonce, ct))
        return m.ShareKeys(self.config.job_id, self.node_id, tuple(out))

    def masked_input(
        self, delivery: m.ShareDelivery | bytes, encoded: npt.NDArray[np.uint64]
    ) -> m.MaskedInput:
        """Round 3: store neighbours' shares, then mask the input encoded by ``FixedPointCodec.encode``.

        The input is taken mod 2^bits; the codec has already refused values that would wrap.
        """
        if isinstance(delivery, bytes):
            delivery = m.ShareDelivery.from_bytes(delivery)
        self._expect(m.ROUND_MASKED_INPUT, "masked_input")
        _check_job(self.config, delivery.job_id, "share delivery")
        if delivery.recipient != self.node_id:
            raise SecAggError(
                "secagg_misrouted", f"shares for {delivery.recipient!r} delivered to {self.node_id!r}"
            )
        vec = np.asarray(encoded)
        if vec.dtype != np.uint64 or vec.shape != (self.config.dim,):
            raise SecAggError(
                "secagg_input",
                f"input must be a uint64 vector of length {self.config.dim}, encoded by FixedPointCodec",
            )
        self._enter(m.ROUND_MASKED_INPUT, "masked_input")
        peers = []
        for item in delivery.shares:
            v = item.sender
            if (
                item.recipient != self.node_id
                or v not in self.config.graph[self.node_id]
                or v not in self._directory
            ):
                raise SecAggError("secagg_misrouted", f"unexpected share from {v!r} for {item.recipient!r}")
            if v in self._received:
                raise SecAggError("secagg_duplicate", f"two share messages from {v!r}")
            aead = self._aeads[v]
            try:
                plaintext = aead.decrypt(
                    item.nonce, item.ciphertext, _share_aad(self.config.job_id, v, self.node_id)
                )
            except InvalidTag:
                raise SecAggError("secagg_bad_share", f"share from {v!r} fails authentication") from None
            b_raw, s_raw = m.unpack(plaintext)
            b, s = Share.from_bytes(b_raw), Share.from_bytes(s_raw)
            if b.x != self.config.index(self.node_id) or s.x != b.x:
                raise SecAggError("secagg_bad_share", f"share from {v!r} is for another holder")
            self._received[v] = (b, s)
            peers.append(v)
        self._need(len(peers) + 1, "neighbours shared keys")
        self._mask_peers = tuple(sorted(peers))
        terms = [(self_mask_key(self._seed, self.config.job_id, self.node_id), 1)]
        terms += [(self._pair_keys[v], 1 if self.node_id < v else -1) for v in self._mask_peers]
        acc = apply_masks(vec, terms)
        self._pair_keys.clear()
        # No reduction to 2^bits here: the masks are uniform mod 2^64, so the full word reveals
        # nothing more, and the coordinator reduces the sum once.
        return m.MaskedInput(self.config.job_id, self.node_id, acc)

    def unmask(self, request: m.UnmaskRequest | bytes) -> m.UnmaskResponse:
        """Round 4: reveal b-shares of survivors and s-shares of dropped neighbours, never both for a node."""
        if isinstance(request, bytes):
            request = m.UnmaskRequest.from_bytes(request)
        self._expect(m.ROUND_UNMASK, "unmask")
        _check_job(self.config, request.job_id, "unmask request")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise SecAggError(
                "secagg_inconsistent", f"nodes both survived and dropped: {sorted(survivors & dropped)}"
            )
        if self.node_id not in survivors:
            raise SecAggError("secagg_inconsistent", "unmask request does not list this node as a survivor")
        if len(survivors) < self.config.threshold:
            raise SecAggError(
                "secagg_threshold",
                f"unmasking needs at least {self.config.threshold} survivors, request lists {len(survivors)}",
            )
        self._enter(m.ROUND_UNMASK, "unmask")
        b_out = tuple((o, self._received[o][0].to_bytes()) for o in sorted(survivors) if o in self._received)
        s_out = tuple((o, self._received[o][1].to_bytes()) for o in sorted(dropped) if o in self._mask_peers)
        # The own seed is no longer needed; dropping it limits what a later compromise reveals.
        self._seed = b""
        return m.UnmaskResponse(self.config.job_id, self.node_id, b_out, s_out)

    def _need(self, have: int, what: str) -> None:
        if have < self.config.threshold:
            raise SecAggError(
                "secagg_threshold",
                f"{self.node_id}: needed {self.config.threshold} holders, only {have} remain ({what})",
            )


class SecAggServer:
    """The coordinator's side: collects each round, routes shares, and unmasks only the sum."""

    def __init__(self, config: SecAggConfig, verify_keys: Mapping[str, VerifyKey]) -> None:
        missing = set(config.node_ids) - set(verify_keys)
        if missing:
            raise SecAggError("secagg_config", f"no verification key for {sorted(missing)}")
        self.config = config
        self._verify = {n: _load_verify_key(verify_keys[n]) for n in config.node_ids}
        self.round = m.ROUND_ADVERTISE
        self._adverts: dict[str, m.AdvertiseKeys] = {}
        self._routes: dict[str, list[m.EncryptedShare]] = {}  # recipient -> shares
        self._shared: set[str] = set()  # U2
        self._acc = np.zeros(config.dim, dtype=np.uint64)
        self._masked: set[str] = set()  # U3
        self._responses: dict[str, m.UnmaskResponse] = {}
        # Revealed shares by (kind, owner): (holder, share bytes), filled as responses arrive, so
        # unmasking reads each owner's shares at once rather than scanning every response (O(n k)
        # per job, not O(n^2 k)).
        self._revealed: dict[tuple[int, str], list[tuple[str, bytes]]] = {}
        self._result: npt.NDArray[np.uint64] | None = None

    @property
    def survivors(self) -> tuple[str, ...]:
        """Nodes whose inputs are in the sum (known after round 3)."""
        return tuple(sorted(self._masked))

    def receive(self, message: m.Message | bytes) -> None:
        """Accept one node's message for the current round; anything else is refused."""
        if isinstance(message, bytes):
            message = self._decode(message)
        if isinstance(message, m.KeyDirectory | m.ShareDelivery | m.UnmaskRequest):
            raise SecAggError(
                "secagg_malformed", f"{type(message).__name__} is sent by the coordinator, not to it"
            )
        _check_job(self.config, message.job_id, f"{type(message).__name__} from {message.node_id!r}")
        if message.ROUND != self.round:
            raise SecAggError(
                "secagg_wrong_round",
                f"{type(message).__name__} from {message.node_id!r} is for round {message.ROUND}, "
                f"aggregation is at round {self.round}",
            )
        if message.node_id not in self._verify:
            raise SecAggError("secagg_unknown_node", f"{message.node_id!r} is not a participant of this job")
        if isinstance(message, m.AdvertiseKeys):
            self._on_advert(message)
        elif isinstance(message, m.ShareKeys):
            self._on_shares(message)
        elif isinstance(message, m.MaskedInput):
            self._on_masked(message)
        else:
            self._on_unmask(message)

    def close_round(self) -> dict[str, m.KeyDirectory | m.ShareDelivery | m.UnmaskRequest]:
        """End the current round (nodes not heard from count as dropped) and return what to send to whom."""
        r = self.round
        if r == m.ROUND_ADVERTISE:
            self._need(len(self._adverts), "advertised keys")
            self.round += 1
            # Each node gets its neighbours' keys and its own, not all n (Bell et al. 2020): what a
            # node verifies and receives stays O(k), not O(n) each and O(n^2) in all.
            graph, adverts = self.config.graph, self._adverts
            return {
                n: m.KeyDirectory(
                    self.config.job_id,
                    tuple(adverts[v] for v in sorted((graph[n] & adverts.keys()) | {n})),
                )
                for n in sorted(adverts)
            }
        if r == m.ROUND_SHARE_KEYS:
            self._need(len(self._shared), "shared keys")
            self.round += 1
            return {
                n: m.ShareDelivery(
                    self.config.job_id,
                    n,
                    tuple(s for s in self._routes.get(n, []) if s.sender in self._shared),
                )
                for n in sorted(self._shared)
            }
        if r == m.ROUND_MASKED_INPUT:
            self._need(len(self._masked), "sent masked inputs")
            self.round += 1
            request = m.UnmaskRequest(
                self.config.job_id, self.survivors, tuple(sorted(self._shared - self._masked))
            )
            return {n: request for n in self.survivors}
        if r == m.ROUND_UNMASK:
            self._result = self._unmask()
            self.round += 1
            return {}
        raise SecAggError("secagg_wrong_round", "aggregation is already finished")

    def result(self) -> npt.NDArray[np.uint64]:
        """The sum of the survivors' encoded inputs mod 2^bits; decode with ``FixedPointCodec.decode_sum``."""
        if self._result is None:
            raise SecAggError("secagg_wrong_round", "the sum is only known after round 4 is closed")
        return self._result

    def _decode(self, data: bytes) -> m.Message:
        kinds = {cls.KIND: cls for cls in (m.AdvertiseKeys, m.ShareKeys, m.MaskedInput, m.UnmaskResponse)}
        if len(data) < 6 or data[:4] != m.MAGIC or data[4] not in kinds:
            raise SecAggError("secagg_malformed", "not a node-to-coordinator secure-aggregation message")
        return kinds[data[4]].from_bytes(data)

    def _on_advert(self, advert: m.AdvertiseKeys) -> None:
        if advert.node_id in self._adverts:
            raise SecAggError("secagg_duplicate", f"second advertisement from {advert.node_id!r}")
        _verify_advert(self.config, self._verify, advert)
        self._adverts[advert.node_id] = advert

    def _on_shares(self, msg: m.ShareKeys) -> None:
        u = msg.node_id
        if u not in self._adverts or u in self._shared:
            raise SecAggError("secagg_duplicate", f"share keys from {u!r} are unexpected or repeated")
        allowed = self.config.graph[u] & self._adverts.keys()
        recipients = [s.recipient for s in msg.shares]
        if any(s.sender != u for s in msg.shares) or len(set(recipients)) != len(recipients):
            raise SecAggError("secagg_misrouted", f"share keys from {u!r} carry foreign or repeated entries")
        if not set(recipients) <= allowed:
            raise SecAggError("secagg_misrouted", f"{u!r} addressed shares to non-neighbours")
        for s in msg.shares:
            self._routes.setdefault(s.recipient, []).append(s)
        self._shared.add(u)

    def _on_masked(self, msg: m.MaskedInput) -> None:
        u = msg.node_id
        if u not in self._shared or u in self._masked:
            raise SecAggError("secagg_duplicate", f"masked input from {u!r} is unexpected or repeated")
        vec = np.asarray(msg.vector)
        if vec.dtype != np.uint64 or vec.shape != (self.config.dim,):
            raise SecAggError(
                "secagg_input", f"masked input from {u!r} is not a uint64 vector of length {self.config.dim}"
            )
        # Summing on arrival keeps one vector in memory however many nodes take part.
        np.add(self._acc, vec, out=self._acc)
        self._masked.add(u)

    def _on_unmask(self, msg: m.UnmaskResponse) -> None:
        u = msg.node_id
        if u not in self._masked or u in self._responses:
            raise SecAggError("secagg_duplicate", f"unmask response from {u!r} is unexpected or repeated")
        owners_b = {o for o, _ in msg.self_mask_shares}
        owners_s = {o for o, _ in msg.mask_key_shares}
        if not owners_b <= self._masked or not owners_s <= self._shared - self._masked:
            raise SecAggError("secagg_inconsistent", f"{u!r} revealed shares for the wrong nodes")
        self._responses[u] = msg
        for kind, revealed in ((0, msg.self_mask_shares), (1, msg.mask_key_shares)):
            for owner, raw in revealed:
                self._revealed.setdefault((kind, owner), []).append((u, raw))

    def _collect(self, owner: str, kind: int) -> list[Share]:
        shares = []
        for holder, raw in self._revealed.get((kind, owner), []):
            share = Share.from_bytes(raw)
            if share.x != self.config.index(holder):
                raise SecAggError("secagg_bad_share", f"{holder!r} sent a share that is not its own")
            shares.append(share)
        return shares

    def _recover(self, owner: str, kind: int, what: str) -> bytes:
        shares = self._collect(owner, kind)
        t = self.config.threshold
        if len(shares) < t:
            raise SecAggError(
                "secagg_threshold",
                f"recovering the {what} of {owner!r} needs {t} shares, only {len(shares)} holders responded",
            )
        return combine_shares(shares, t)

    def _unmask(self) -> npt.NDArray[np.uint64]:
        self._need(len(self._responses), "answered the unmask request")
        job = self.config.job_id
        terms = [(self_mask_key(self._recover(u, 0, "self-mask seed"), job, u), -1) for u in self.survivors]
        for v in sorted(self._shared - self._masked):
            partners = sorted(s.recipient for s in self._routes_from(v) if s.recipient in self._masked)
            if not partners:
                continue  # v masked nobody's input, so there is nothing to remove
            secret = X25519PrivateKey.from_private_bytes(self._recover(v, 1, "mask key"))
            if _raw_public(secret) != self._adverts[v].mask_public:
                raise SecAggError(
                    "secagg_inconsistent", f"recovered mask key of {v!r} does not match its advertisement"
                )
            for u in partners:
                key = pairwise_mask_key(pair_secret(secret, self._adverts[u].mask_public), job, u, v)
                # u added +PRG(s_uv) if u < v and -PRG(s_uv) otherwise; undo exactly that.
                terms.append((key, -1 if u < v else 1))
        acc = apply_masks(self._acc, terms)
        return acc & self.config.modulus_mask

    def _routes_from(self, sender: str) -> list[m.EncryptedShare]:
        return [s for shares in self._routes.values() for s in shares if s.sender == sender]

    def _need(self, have: int, what: str) -> None:
        if have < self.config.threshold:
            raise SecAggError(
                "secagg_threshold",
                f"needed at least {self.config.threshold} nodes, only {have} {what}",
            )


def run_in_memory(
    inputs: Mapping[str, npt.ArrayLike],
    threshold: int,
    k: int,
    drop_after: Mapping[str, int] | None = None,
    codec: FixedPointCodec | None = None,
    job_id: str = "in-memory",
) -> npt.NDArray[np.generic]:
    """Run all four rounds in one process and return the decoded sum of the inputs that made it.

    ``drop_after[node] = r`` makes the node vanish after completing round r (0: never starts,
    1: after advertising, 2: after sharing keys, 3: after sending its masked input).
    Integer inputs without a codec are summed exactly mod 2^64; real inputs need a codec.
    """
    drop = dict(drop_after or {})
    arrays = {n: np.asarray(v) for n, v in inputs.items()}
    dims = {a.shape for a in arrays.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise SecAggError("secagg_input", "all inputs must be 1-D vectors of the same length")
    if codec is None:
        if any(a.dtype.kind not in "iu" for a in arrays.values()):
            raise SecAggError("fixed_point_codec_required", "real-valued inputs need a FixedPointCodec")
        codec = FixedPointCodec(
            lo=-(2**62) // len(arrays), hi=2**62 // len(arrays), bits=64, max_parties=len(arrays)
        )
    as_integer = codec.scale == 1 and all(a.dtype.kind in "iu" for a in arrays.values())
    config = SecAggConfig(job_id, tuple(arrays), threshold, k, next(iter(dims))[0], bits=codec.bits)
    signing = {n: Ed25519PrivateKey.generate() for n in config.node_ids}
    verify = {n: key.public_key() for n, key in signing.items()}
    clients = {n: SecAggClient(config, n, signing[n], verify) for n in config.node_ids}
    server = SecAggServer(config, verify)

    def alive(node: str, rnd: int) -> bool:
        return drop.get(node, 99) >= rnd

    for n, c in clients.items():
        if alive(n, 1):
            server.receive(m.AdvertiseKeys.from_bytes(c.advertise().to_bytes()))
    directory = server.close_round()
    for n, msg in directory.items():
        if alive(n, 2):
            server.receive(clients[n].share_keys(msg.to_bytes()).to_bytes())
    deliveries = server.close_round()
    for n, msg in deliveries.items():
        if alive(n, 3):
            server.receive(clients[n].masked_input(msg.to_bytes(), codec.encode(arrays[n])).to_bytes())
    requests = server.close_round()
    for n, msg in requests.items():
        if alive(n, 4):
            server.receive(clients[n].unmask(msg.to_bytes()).to_bytes())
    server.close_round()
    return codec.decode_sum(server.result(), as_integer=as_integer)
