"""Federation PKI: one root CA, per-partner and per-person certificates, a CRL, and gRPC mTLS credentials.

Certificates follow RFC 5280 profiles (X.509 v3, CRL v2) and are used for TLS 1.3 mutual
authentication (RFC 8446) between coordinator, nodes and users. Keys are EC P-256 with ECDSA/SHA-256,
which gRPC's BoringSSL accepts for both server and client certificates.

The canonical place of a certificate's role is a subjectAltName URI ``urn:federation:role:<role>``.
The subject OU repeats the role for people reading the certificate; a certificate whose OU disagrees
with its role URI is refused. The subject O carries the partner (node id) the holder belongs to.

PKI folder layout::

    <dir>/ca.pem            root certificate (public, shipped in every kit as ca.pem)
    <dir>/ca.key            root private key (mode 0600; keep offline in real use)
    <dir>/crl.pem           certificate revocation list signed by the root
    <dir>/index.json        every certificate issued, with its revocation state
    <dir>/issued/<serial>.pem  a copy of every certificate issued
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.identity import (  # noqa: F401 - the PKI's public API includes these
    ROLE_URI_PREFIX,
    ROLES,
    Identity,
    PemSource,
    PkiError,
    aware,
    cert_fingerprint,
    cert_identity,
    check_crl,
    check_grpc_peer,
    check_peer,
    check_validity,
    grpc_channel_credentials,
    grpc_server_credentials,
    is_ca,
    issuer_of,
    load_ca_bundle,
    load_cert,
    load_identity,
    name_attr,
    pem_bytes,
    serial_hex,
    subject_label,
    utcnow,
)

Role = Literal["coordinator", "node", "analyst", "privacy_officer", "operator", "admin"]
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL_FILE = "crl.pem"
INDEX_FILE = "index.json"
ISSUED_DIR = "issued"

# Tolerates small clock differences between the admin's machine and the partners' nodes.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_CRL_VALIDITY = dt.timedelta(days=365)
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class CertInfo:
    subject: str
    role: str
    org: str | None
    serial: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked: bool
    revocation_reason: str | None = None


@dataclass(frozen=True)
class Kit:
    """A folder partner IT installs from: cert.pem, key.pem, ca.pem and README.txt."""

    subject: str
    role: str
    org: str | None
    serial: str
    fingerprint: str
    folder: Path
    cert: Path
    key: Path
    ca: Path


# ---------------------------------------------------------------- internals


def _new_serial() -> int:
    # 64 random bits (the CA/Browser Forum minimum) keep serials short enough to type into 'revoke'.
    serial = 0
    while serial == 0:
        serial = x509.random_serial_number() >> 95
    return serial


def _write_private(path: Path, data: bytes) -> None:
    """Create or overwrite a file readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    # A crash mid-write must never leave a half-written index or CRL that nodes would then load.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_subject(subject: str) -> None:
    if not _SUBJECT_RE.match(subject):
        raise PkiError(
            "bad_subject",
            f"subject {subject!r} must be 1-64 characters of letters, digits, '.', '_' or '-'",
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise PkiError("bad_role", f"role {role!r} is not one of {', '.join(ROLES)}")


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise PkiError("bad_days", f"validity must be a whole number of days >= 1, got {days!r}")


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _DNS_RE.match(host):
            raise PkiError("bad_host", f"host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


# ---------------------------------------------------------------- PKI folder state


def _root_paths(pki_dir: Path) -> tuple[Path, Path]:
    cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise PkiError("no_root", f"no root CA in {pki_dir}; run 'federation pki init' first")
    return cert_path, key_path


def _load_root(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = _root_paths(pki_dir)
    cert = load_cert(cert_path.read_bytes(), f"root certificate {cert_path}")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("bad_certificate", f"root key {key_path} is not an EC key")
    return cert, key


def _read_index(pki_dir: Path) -> dict[str, Any]:
    path = pki_dir / INDEX_FILE
    if not path.exists():
        return {"certificates": []}
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PkiError("bad_index", f"index file {path} is not valid JSON") from None
    if not isinstance(index, dict) or not isinstance(index.get("certificates"), list):
        raise PkiError("bad_index", f"index file {path} has no 'certificates' list")
    return index


def _write_index(pki_dir: Path, index: dict[str, Any]) -> None:
    _write_atomic(pki_dir / INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode())


def _write_crl(
    pki_dir: Path,
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    index: dict[str, Any],
    now: dt.datetime,
) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root_cert.subject)
        .last_update(now)
        .next_update(now + _CRL_VALIDITY)
        .add_extension(x509.CRLNumber(int(index.get("crl_number", 0))), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
    )
    for rec in index["certificates"]:
        revoked = rec.get("revoked")
        if not revoked:
            continue
        entry = x509.RevokedCertificateBuilder().serial_number(int(rec["serial"], 16))
        entry = entry.revocation_date(dt.datetime.fromisoformat(revoked["at"]))
        # RFC 5280 5.3.1: the reason code should be absent rather than "unspecified".
        if revoked["reason"] != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REVOCATION_REASONS[revoked["reason"]]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(root_key, hashes.SHA256())
    _write_atomic(pki_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))


# ---------------------------------------------------------------- administration


def init_root(
    dir: Path | str,
    name: str = "MIT Federation Root",
    days: int = 3650,
    *,
    now: dt.datetime | None = None,
) -> Path:
    """Create the root CA (EC P-256, ECDSA-SHA256) in ``dir``; returns the path of ca.pem.

    Refuses to overwrite an existing root: replacing it would silently orphan every issued kit.
    """
    _check_days(days)
    if not name.strip():
        raise PkiError("bad_subject", "root CA name must not be empty")
    pki_dir = Path(dir)
    if (pki_dir / CA_CERT).exists() or (pki_dir / CA_KEY).exists():
        raise PkiError("exists", f"a root CA already exists in {pki_dir}; refusing to overwrite it")
    if not pki_dir.exists():
        # Only a folder we create is locked down; an existing folder's mode is its owner's choice.
        pki_dir.mkdir(parents=True, mode=0o700)
        os.chmod(pki_dir, 0o700)
    (pki_dir / ISSUED_DIR).mkdir(exist_ok=True)

    start = aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_new_serial())
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        pki_dir / CA_KEY,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _write_atomic(pki_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    index: dict[str, Any] = {
        "root": {
            "name": name,
            "serial": serial_hex(cert.serial_number),
            "fingerprint": cert_fingerprint(cert),
        },
        "crl_number": 1,
        "certificates": [],
    }
    _write_index(pki_dir, index)
    _write_crl(pki_dir, cert, key, index, start)
    return pki_dir / CA_CERT


def _leaf_extensions(
    builder: x509.CertificateBuilder,
    role: str,
    hosts: list[str],
    public_key: ec.EllipticCurvePublicKey,
    root_key: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role)]
    if role in ("coordinator", "node"):
        sans.extend(_host_names(hosts))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "coordinator":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    return (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
    )


def _kit_readme(subject: str, role: str, org: str | None, serial: str, not_after: dt.datetime) -> str:
    section = {"coordinator": "[coordinator]", "node": "[node]"}.get(role, "[client]")
    owner = f" of {org}" if org else ""
    return (
        f"Federation certificate kit for '{subject}' (role {role}{owner}).\n"
        f"Serial {serial}; valid until {not_after.isoformat()}.\n\n"
        "Files:\n"
        "  cert.pem  this party's certificate, signed by the federation root\n"
        "  key.pem   this party's private key: keep it secret, mode 0600, never e-mail it\n"
        "  ca.pem    the federation root certificate used to verify every peer\n"
        "  crl.pem   the federation's revocation list when this kit was made; install each newer one\n"
        "            the admin sends in its place (docs/pki.md)\n\n"
        f"Install: copy this folder next to the config file and set in its {section} section\n"
        "(paths are relative to the config file's folder):\n\n"
        f'  tls_cert = "{subject}/cert.pem"\n'
        f'  tls_key  = "{subject}/key.pem"\n'
        f'  tls_ca   = "{subject}/ca.pem"\n'
        f'  tls_crl  = "{subject}/crl.pem"\n\n'
        f'(or tls_dir = "{subject}" for all four).\n\n'
        "Ask the federation admin for a new kit before the expiry date above.\n"
        "If key.pem may have leaked, tell the federation admin at once so the certificate is revoked.\n"
    )


def issue(
    dir: Path | str,
    subject: str,
    role: Role,
    org: str | None = None,
    hosts: list[str] | tuple[str, ...] = DEFAULT_HOSTS,
    days: int = 365,
    out: Path | str | None = None,
    *,
    replace: bool = False,
    now: dt.datetime | None = None,
) -> Kit:
    """Issue a certificate signed by the root and write the kit folder ``<out>/<subject>/``.

    ``out`` defaults to ``<dir>/kits``. Node CNs are node ids (e.g. "douane"); persons' CNs are
    their ids. A subject with an active certificate is refused unless ``replace`` is set, in which
    case the older certificates are revoked as superseded. ``now`` moves the validity window,
    which lets tests and drills produce expired or not-yet-valid certificates.
    """
    _check_subject(subject)
    _check_role(role)
    _check_days(days)
    if org is not None and not _SUBJECT_RE.match(org):
        raise PkiError(
            "bad_subject", f"org {org!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    pki_dir = Path(dir)
    root_cert, root_key = _load_root(pki_dir)
    index = _read_index(pki_dir)
    active = [r for r in index["certificates"] if r["subject"] == subject and not r.get("revoked")]
    if active and not replace:
        raise PkiError(
            "exists",
            f"subject {subject!r} already has an active certificate (serial {active[0]['serial']}); "
            "revoke it first or replace it",
        )

    start = aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(_new_serial())
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    builder = _leaf_extensions(builder, role, list(hosts), key.public_key(), root_key)
    cert = builder.sign(root_key, hashes.SHA256())
    serial = serial_hex(cert.serial_number)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    folder = (Path(out) if out is not None else pki_dir / "kits") / subject
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(
        folder / "key.pem",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _write_atomic(folder / "cert.pem", cert_pem)
    _write_atomic(folder / "ca.pem", root_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "README.txt").write_text(_kit_readme(subject, role, org, serial, cert.not_valid_after_utc))

    issued = pki_dir / ISSUED_DIR
    issued.mkdir(exist_ok=True)
    _write_atomic(issued / f"{serial}.pem", cert_pem)
    index["certificates"].append(
        {
            "serial": serial,
            "subject": subject,
            "role": role,
            "org": org,
            "fingerprint": cert_fingerprint(cert),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "revoked": None,
        }
    )
    if active:
        _mark_revoked(active, "superseded", utcnow())
        index["crl_number"] = int(index.get("crl_number", 0)) + 1
        _write_index(pki_dir, index)
        _write_crl(pki_dir, root_cert, root_key, index, utcnow())
    else:
        _write_index(pki_dir, index)
    # The newest CRL travels with every kit, so a node or coordinator refuses revoked peers (and a
    # node refuses to start on a revoked certificate of its own) from its first start on.
    _write_atomic(folder / CRL_FILE, (pki_dir / CRL_FILE).read_bytes())
    return Kit(
        subject=subject,
        role=role,
        org=org,
        serial=serial,
        fingerprint=cert_fingerprint(cert),
        folder=folder,
        cert=folder / "cert.pem",
        key=folder / "key.pem",
        ca=folder / "ca.pem",
    )


def _mark_revoked(records: list[dict[str, Any]], reason: str, when: dt.datetime) -> None:
    for rec in records:
        rec["revoked"] = {"reason": reason, "at": when.isoformat()}


def revoke(dir: Path | str, serial_or_subject: str, reason: str = "unspecified") -> list[str]:
    """Revoke by subject (all its active certificates) or by hex serial; rewrites crl.pem.

    Returns the serials revoked. ``reason`` is one of the RFC 5280 CRLReason names in
    ``REVOCATION_REASONS`` (e.g. key_compromise, superseded, cessation_of_operation).
    """
    if reason not in REVOCATION_REASONS:
        raise PkiError("bad_reason", f"reason {reason!r} is not one of {', '.join(REVOCATION_REASONS)}")
    pki_dir = Path(dir)
    root_cert, root_key = _load_root(pki_dir)
    index = _read_index(pki_dir)
    records = index["certificates"]
    targets = [r for r in records if r["subject"] == serial_or_subject and not r.get("revoked")]
    if not targets:
        wanted = serial_or_subject.lower().removeprefix("0x").replace(":", "")
        by_serial = [r for r in records if r["serial"] == wanted]
        if by_serial and by_serial[0].get("revoked"):
            raise PkiError("exists", f"certificate {wanted} ({by_serial[0]['subject']}) is already revoked")
        targets = by_serial
    if not targets:
        raise PkiError("not_found", f"no active certificate with subject or serial {serial_or_subject!r}")
    now = utcnow()
    _mark_revoked(targets, reason, now)
    index["crl_number"] = int(index.get("crl_number", 0)) + 1
    _write_index(pki_dir, index)
    _write_crl(pki_dir, root_cert, root_key, index, now)
    return [r["serial"] for r in targets]


def show(dir: Path | str) -> list[CertInfo]:
    """Every certificate issued from this PKI folder, oldest first."""
    pki_dir = Path(dir)
    _root_paths(pki_dir)
    infos = []
    for rec in _read_index(pki_dir)["certificates"]:
        revoked = rec.get("revoked")
        infos.append(
            CertInfo(
                subject=rec["subject"],
                role=rec["role"],
                org=rec.get("org"),
                serial=rec["serial"],
                fingerprint=rec["fingerprint"],
                not_before=dt.datetime.fromisoformat(rec["not_before"]),
                not_after=dt.datetime.fromisoformat(rec["not_after"]),
                revoked=bool(revoked),
                revocation_reason=revoked["reason"] if revoked else None,
            )
        )
    return infos


# ---------------------------------------------------------------- verification


# ---------------------------------------------------------------- gRPC credentials
