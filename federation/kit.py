"""The analyst's certificate kit: checked before the SDK dials, and a failed handshake explained.

gRPC reports a TLS handshake the coordinator refused, or one the client gave up on, only as
UNAVAILABLE "Socket closed", the same as a coordinator that is down. So the SDK checks its own
kit first (RFC 5280 validity period, chain to the kit's CA, key matching the certificate), and when
a secure call fails as unavailable it repeats the handshake with Python's ``ssl`` module, which
says which side refused and why (the TLS alert, RFC 8446 section 6.2).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.errors import FederationError
from protocols.identity import Identity, PkiError, check_peer

KIT_FILES = ("cert.pem", "key.pem", "ca.pem")
EXPIRED = "certificate_expired"
NOT_YET_VALID = "certificate_not_yet_valid"
UNTRUSTED = "certificate_untrusted"
HANDSHAKE_SECONDS = 5.0

_PKI_RULES = {"expired": EXPIRED, "not_yet_valid": NOT_YET_VALID, "unknown_ca": UNTRUSTED}
_RENEW = "ask your federation's PKI administrator for a new kit (federation pki issue)"


def check_kit(folder: Path, now: dt.datetime | None = None) -> Identity:
    """The kit's identity, or a ``FederationError`` naming the rule its certificate breaks."""
    missing = [n for n in KIT_FILES if not (folder / n).exists()]
    if missing:
        raise FederationError("tls_config", f"certificate kit {folder} lacks {', '.join(missing)}")
    cert_pem = (folder / "cert.pem").read_bytes()
    try:
        identity = check_peer(cert_pem, folder / "ca.pem", now=now)
    except PkiError as exc:
        rule = _PKI_RULES.get(exc.rule, exc.rule)
        hint = "" if rule == UNTRUSTED else f"; {_RENEW}"
        if rule == UNTRUSTED:
            hint = f"; the kit's ca.pem is not the root that issued it: {_RENEW}"
        raise FederationError(rule, f"your certificate kit {folder}: {exc.message}{hint}") from None
    try:
        key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), password=None)
    except (ValueError, TypeError):
        raise FederationError(
            "tls_config", f"certificate kit {folder}: key.pem is not a readable key"
        ) from None
    cert = x509.load_pem_x509_certificate(cert_pem)
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise FederationError("tls_config", f"certificate kit {folder}: key.pem does not belong to cert.pem")
    return identity


def _alert(exc: ssl.SSLError) -> str:
    return (exc.reason or str(exc)).lower()


def explain_handshake(
    address: str, folder: Path, timeout: float = HANDSHAKE_SECONDS
) -> FederationError | None:
    """Why a TLS handshake with the coordinator at ``address`` fails for this kit, or ``None``.

    ``None`` also when the coordinator cannot be reached at all: then it is simply down.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(str(folder / "cert.pem"), str(folder / "key.pem"))
    context.set_alpn_protocols(["h2"])  # gRPC servers speak HTTP/2 only
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError):
        return None
    with raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                # TLS 1.3 sends the server's verdict on the client certificate after the handshake:
                # read once to receive it (an alert), or the server's first HTTP/2 frame.
                tls.settimeout(timeout)
                try:
                    first = tls.recv(1)
                except TimeoutError:
                    return None
                except ConnectionResetError:
                    first = b""
                if not first:
                    # A gRPC server opens with HTTP/2 settings; one that hangs up at once refused
                    # the client certificate without an alert.
                    return FederationError(
                        UNTRUSTED,
                        f"the coordinator at {address} closed the connection right after the TLS "
                        f"handshake: it does not accept your certificate (kit {folder}); it is not "
                        f"issued by the federation root the coordinator trusts; {_RENEW}",
                    )
        except ssl.SSLCertVerificationError as exc:
            return FederationError(
                UNTRUSTED,
                f"the coordinator at {address} presents a certificate your kit's CA does not trust "
                f"({exc.verify_message}): the kit {folder} is from another federation root, or the "
                "address is not your federation's coordinator",
            )
        except ssl.SSLError as exc:
            alert = _alert(exc)
            if "expired" in alert:
                rule, why = EXPIRED, "it has expired"
            elif "unknown ca" in alert or "bad certificate" in alert or "certificate unknown" in alert:
                rule, why = UNTRUSTED, "it is not issued by the federation root the coordinator trusts"
            elif "revoked" in alert:
                rule, why = "revoked", "it is revoked"
            else:
                return None
            return FederationError(
                rule, f"the coordinator at {address} refused your certificate (kit {folder}): {why}"
            )
        except OSError:
            return None
    return None
