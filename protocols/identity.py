"""Verify federation certificates and build gRPC TLS credentials (RFC 5280 path checks, one level).

Used by the coordinator and the nodes on every call, and by the PKI administration in
``federation/pki.py``. A party's role is carried in its certificate as the SAN URI
``urn:federation:role:<role>`` (mirrored in the OU).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocols.errors import FederationError

ROLES: tuple[str, ...] = ("coordinator", "node", "analyst", "privacy_officer", "operator", "admin")
ROLE_URI_PREFIX = "urn:federation:role:"
PemSource = bytes | str | Path


class PkiError(FederationError):
    """A refused certificate or PKI operation; ``rule`` names the rule that refused it.

    Peer checks use: unknown_ca, expired, not_yet_valid, revoked, wrong_role, no_certificate,
    bad_certificate, bad_crl. PKI administration uses: no_root, exists, not_found, bad_subject,
    bad_role, bad_host, bad_reason, bad_days.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(rule, message)


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate belongs to. ``serial`` is lowercase hex."""

    subject: str
    role: str
    org: str | None
    fingerprint: str
    serial: str


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return utcnow()
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def pem_bytes(source: PemSource, what: str) -> bytes:
    """Accept PEM/DER content as bytes or str, or a path to a file holding it."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and "-----BEGIN" in source:
        return source.encode()
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError("not_found", f"cannot read {what} file {path}: {exc.strerror}") from None


def load_cert(data: bytes, what: str) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise PkiError("bad_certificate", f"{what} is not a valid X.509 certificate") from None


def load_ca_bundle(ca: PemSource) -> list[x509.Certificate]:
    data = pem_bytes(ca, "CA")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PkiError("bad_certificate", "CA bundle holds no valid PEM certificate") from None
    return certs


def name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def subject_label(cert: x509.Certificate) -> str:
    return name_attr(cert.subject, NameOID.COMMON_NAME) or cert.subject.rfc4514_string() or "<no subject>"


def cert_identity(cert: x509.Certificate) -> Identity:
    subject = name_attr(cert.subject, NameOID.COMMON_NAME)
    label = subject or cert.subject.rfc4514_string()
    if not subject:
        raise PkiError("bad_certificate", f"certificate {label!r} has no common name")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles = [u.removeprefix(ROLE_URI_PREFIX) for u in uris if u.startswith(ROLE_URI_PREFIX)]
    if len(roles) != 1 or roles[0] not in ROLES:
        raise PkiError("wrong_role", f"certificate of {subject!r} carries no single valid federation role")
    role = roles[0]
    ou = name_attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if ou is not None and ou != role:
        raise PkiError("wrong_role", f"certificate of {subject!r} has OU {ou!r} but role URI {role!r}")
    return Identity(
        subject=subject,
        role=role,
        org=name_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        fingerprint=cert_fingerprint(cert),
        serial=serial_hex(cert.serial_number),
    )


def load_identity(cert_pem: PemSource) -> Identity:
    """Read subject, role and org from a certificate without verifying it (see ``check_peer``)."""
    return cert_identity(load_cert(pem_bytes(cert_pem, "certificate"), "certificate"))


def issuer_of(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def check_validity(cert: x509.Certificate, label: str, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise PkiError(
            "not_yet_valid",
            f"certificate of {label!r} is not valid before {cert.not_valid_before_utc.isoformat()}",
        )
    if now > cert.not_valid_after_utc:
        raise PkiError(
            "expired", f"certificate of {label!r} expired on {cert.not_valid_after_utc.isoformat()}"
        )


def check_crl(cert: x509.Certificate, ca: x509.Certificate, crl_pem: PemSource, label: str) -> None:
    data = pem_bytes(crl_pem, "CRL")
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError:
        raise PkiError("bad_crl", "CRL is not a valid X.509 revocation list") from None
    # A CRL from another issuer, or with a bad signature, proves nothing: refuse rather than pass.
    pub = ca.public_key()
    if (
        crl.issuer != ca.subject
        or not isinstance(pub, ec.EllipticCurvePublicKey)
        or not crl.is_signature_valid(pub)
    ):
        raise PkiError("bad_crl", f"CRL is not signed by the CA that issued {label!r}")
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None:
        raise PkiError(
            "revoked",
            f"certificate of {label!r} (serial {serial_hex(cert.serial_number)}) was revoked on "
            f"{entry.revocation_date_utc.date().isoformat()}",
        )


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def check_peer(
    cert_pem_or_der: PemSource,
    ca_pem: PemSource,
    crl_pem: PemSource | None = None,
    now: dt.datetime | None = None,
    expected_roles: set[str] | frozenset[str] | None = None,
) -> Identity:
    """Verify a peer certificate against the federation root and CRL (RFC 5280 6.1, 6.3, one level).

    Raises ``PkiError`` with rule unknown_ca, expired, not_yet_valid, revoked or wrong_role (and
    bad_certificate / bad_crl for unreadable input). ``ca_pem`` may be a bundle of roots.
    """
    cert = load_cert(pem_bytes(cert_pem_or_der, "peer certificate"), "peer certificate")
    label = subject_label(cert)
    ca = issuer_of(cert, load_ca_bundle(ca_pem))
    if ca is None:
        raise PkiError("unknown_ca", f"certificate of {label!r} is not signed by the federation root")
    when = aware(now)
    check_validity(cert, label, when)
    check_validity(ca, subject_label(ca), when)
    if is_ca(cert):
        raise PkiError("wrong_role", f"certificate of {label!r} is a CA certificate, not a party's")
    if crl_pem is not None:
        check_crl(cert, ca, crl_pem, label)
    identity = cert_identity(cert)
    if expected_roles is not None and identity.role not in expected_roles:
        needed = ", ".join(sorted(expected_roles))
        raise PkiError(
            "wrong_role", f"{identity.subject!r} has role {identity.role!r}; this call needs {needed}"
        )
    return identity


def check_grpc_peer(
    context: grpc.ServicerContext,
    ca_pem: PemSource,
    crl_pem: PemSource | None = None,
    expected_roles: set[str] | frozenset[str] | None = None,
    now: dt.datetime | None = None,
) -> Identity:
    """``check_peer`` on the client certificate of the current gRPC call."""
    certs = context.auth_context().get("x509_pem_cert") or []
    if not certs:
        raise PkiError("no_certificate", f"peer {context.peer()} presented no client certificate")
    return check_peer(certs[0], ca_pem, crl_pem, now=now, expected_roles=expected_roles)


def grpc_server_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ServerCredentials:
    """TLS server credentials that require and verify a client certificate from ``ca``."""
    return grpc.ssl_server_credentials(
        [(pem_bytes(key, "key"), pem_bytes(cert, "certificate"))],
        root_certificates=pem_bytes(ca, "CA"),
        require_client_auth=True,
    )


def grpc_channel_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ChannelCredentials:
    """TLS channel credentials presenting ``cert`` and trusting only servers signed by ``ca``."""
    return grpc.ssl_channel_credentials(
        root_certificates=pem_bytes(ca, "CA"),
        private_key=pem_bytes(key, "key"),
        certificate_chain=pem_bytes(cert, "certificate"),
    )


@dataclass(frozen=True)
class TlsFiles:
    """Where a party's certificate, key, the federation root and (optionally) the CRL live."""

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None

    def crl_bytes(self) -> bytes | None:
        # Read on every check, so a revocation takes effect as soon as the new CRL is installed.
        return self.crl.read_bytes() if self.crl is not None and self.crl.exists() else None

    def check(self, who: str) -> None:
        """Refuse to start without the files; checked when a service starts, not when a config is read."""
        for label, p in (("tls_cert", self.cert), ("tls_key", self.key), ("tls_ca", self.ca)):
            if not p.exists():
                raise PkiError("tls_config", f"{who}: {label} file {p} does not exist")

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc_server_credentials(self.cert, self.key, self.ca)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc_channel_credentials(self.cert, self.key, self.ca)


def tls_files(raw: dict, base: Path, where: str) -> TlsFiles | None:
    """Read ``tls_cert``/``tls_key``/``tls_ca`` (and ``tls_crl``) from a config table, or a kit folder ``tls_dir``."""
    if "tls_dir" in raw:
        folder = Path(str(raw["tls_dir"]))
        folder = folder if folder.is_absolute() else (base / folder).resolve()
        raw = {
            "tls_cert": folder / "cert.pem",
            "tls_key": folder / "key.pem",
            "tls_ca": folder / "ca.pem",
            "tls_crl": folder / "crl.pem",  # optional: install the federation's newest CRL here
            **raw,
        }
    keys = ("tls_cert", "tls_key", "tls_ca")
    present = [k for k in keys if k in raw]
    if not present:
        return None
    if len(present) != len(keys):
        missing = sorted(set(keys) - set(present))
        raise PkiError("tls_config", f"{where}: {', '.join(missing)} missing; give all of {', '.join(keys)}")

    def path(key: str) -> Path:
        p = Path(str(raw[key]))
        return p if p.is_absolute() else (base / p).resolve()

    return TlsFiles(
        path("tls_cert"), path("tls_key"), path("tls_ca"), path("tls_crl") if "tls_crl" in raw else None
    )
