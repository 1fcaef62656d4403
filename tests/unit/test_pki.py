"""Federation PKI: issuing, verification rules, revocation, a real mTLS handshake and the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import stat
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from federation import pki
from federation.pki_cli import PARTNERS, pki_app


@pytest.fixture()
def now() -> dt.datetime:
    """The time the test runs, not the time the module was collected: a long suite must not matter."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    pki_dir = tmp_path / "pki"
    pki.init_root(pki_dir)
    return pki_dir


@pytest.fixture()
def other_root(tmp_path: Path) -> Path:
    pki_dir = tmp_path / "other"
    pki.init_root(pki_dir, name="Some Other Root")
    return pki_dir


def _cert(kit: pki.Kit) -> x509.Certificate:
    return x509.load_pem_x509_certificate(kit.cert.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- issuing and identity


def test_issued_node_certificate_verifies_against_root(root: Path) -> None:
    kit = pki.issue(root, "douane", "node", org="douane")
    ident = pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", root / "crl.pem", expected_roles={"node"})
    assert ident == pki.Identity("douane", "node", "douane", kit.fingerprint, kit.serial)

    cert = _cert(kit)
    ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert kit.ca.read_bytes() == (root / "ca.pem").read_bytes()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "douane"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_der_input_and_path_inputs_are_accepted(root: Path) -> None:
    kit = pki.issue(root, "kmar", "node", org="kmar")
    der = _cert(kit).public_bytes(serialization.Encoding.DER)
    assert pki.check_peer(der, (root / "ca.pem").read_text()).subject == "kmar"
    assert pki.check_peer(kit.cert, str(root / "ca.pem")).role == "node"


def test_coordinator_is_server_and_client_and_people_get_no_host_names(root: Path) -> None:
    coord = _cert(pki.issue(root, "coordinator", "coordinator", hosts=["mdc.example.nl", "10.0.0.7"]))
    eku = list(coord.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = coord.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mdc.example.nl"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]

    person = _cert(pki.issue(root, "jan.jansen", "analyst", org="politie"))
    san = person.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert san.get_values_for_type(x509.IPAddress) == []
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:federation:role:analyst"]


@pytest.mark.parametrize("role", pki.ROLES)
def test_role_is_carried_in_role_uri_and_ou(root: Path, role: str) -> None:
    kit = pki.issue(root, f"holder-{role}", role, org="fiod")  # type: ignore[arg-type]
    ident = pki.load_identity(kit.cert.read_bytes())
    assert (ident.subject, ident.role, ident.org) == (f"holder-{role}", role, "fiod")
    cert = _cert(kit)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role


def test_kit_folder_layout_readme_and_key_modes(root: Path, tmp_path: Path) -> None:
    old_umask = os.umask(0)  # a permissive umask must not leak into private key modes
    try:
        kit = pki.issue(root, "belastingdienst", "node", org="belastingdienst", out=tmp_path / "kits")
    finally:
        os.umask(old_umask)
    assert kit.folder == tmp_path / "kits" / "belastingdienst"
    assert sorted(p.name for p in kit.folder.iterdir()) == [
        "README.txt",
        "ca.pem",
        "cert.pem",
        "crl.pem",
        "key.pem",
    ]
    # The kit's CRL is the root's newest one, signed by the root.
    assert (kit.folder / "crl.pem").read_bytes() == (root / "crl.pem").read_bytes()
    assert _mode(kit.key) == 0o600
    assert _mode(root / "ca.key") == 0o600
    readme = (kit.folder / "README.txt").read_text()
    for key in ("tls_cert", "tls_key", "tls_ca", "tls_crl", "crl.pem"):
        assert key in readme
    assert kit.serial in readme


def test_show_and_index_list_what_was_issued(root: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    a = pki.issue(root, "politie", "node", org="politie")
    b = pki.issue(root, "po-politie", "privacy_officer", org="politie")
    infos = pki.show(root)
    assert [(i.subject, i.role, i.serial, i.fingerprint, i.revoked) for i in infos] == [
        ("politie", "node", a.serial, a.fingerprint, False),
        ("po-politie", "privacy_officer", b.serial, b.fingerprint, False),
    ]
    assert infos[0].not_before <= before < dt.datetime.now(dt.UTC) < infos[0].not_after
    index = json.loads((root / "index.json").read_text())
    assert [c["serial"] for c in index["certificates"]] == [a.serial, b.serial]
    assert (root / "issued" / f"{a.serial}.pem").read_bytes() == a.cert.read_bytes()


# ---------------------------------------------------------------- refusal rules


def _rule(excinfo: pytest.ExceptionInfo[pki.PkiError]) -> str:
    return excinfo.value.rule


def test_expired_certificate_is_refused(root: Path, now: dt.datetime) -> None:
    kit = pki.issue(root, "om", "node", org="om", days=30, now=now - dt.timedelta(days=400))
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", root / "crl.pem")
    assert _rule(excinfo) == "expired"
    assert "'om'" in excinfo.value.message and "\n" not in str(excinfo.value)


def test_not_yet_valid_certificate_is_refused(root: Path, now: dt.datetime) -> None:
    kit = pki.issue(root, "fiod", "node", org="fiod", now=now + dt.timedelta(days=2))
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(kit.cert.read_bytes(), root / "ca.pem")
    assert _rule(excinfo) == "not_yet_valid"
    assert "'fiod'" in excinfo.value.message
    # The same certificate is fine once its window has started.
    later = now + dt.timedelta(days=3)
    assert pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", now=later).subject == "fiod"


def test_certificate_from_another_root_is_unknown_ca(root: Path, other_root: Path) -> None:
    stranger = pki.issue(other_root, "douane", "node", org="douane")
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(stranger.cert.read_bytes(), root / "ca.pem", root / "crl.pem")
    assert _rule(excinfo) == "unknown_ca"
    assert "'douane'" in excinfo.value.message


def test_wrong_role_is_refused(root: Path) -> None:
    kit = pki.issue(root, "analyst-om", "analyst", org="om")
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", expected_roles={"node", "coordinator"})
    assert _rule(excinfo) == "wrong_role"
    assert "'analyst-om'" in excinfo.value.message and "analyst" in excinfo.value.message


def test_root_certificate_itself_is_not_a_party(root: Path) -> None:
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer((root / "ca.pem").read_bytes(), root / "ca.pem")
    assert _rule(excinfo) == "wrong_role"


def test_revoked_by_subject_and_by_serial(root: Path) -> None:
    douane = pki.issue(root, "douane", "node", org="douane")
    kmar = pki.issue(root, "kmar", "node", org="kmar")
    keep = pki.issue(root, "om", "node", org="om")

    assert pki.revoke(root, "douane", "key_compromise") == [douane.serial]
    assert pki.revoke(root, kmar.serial.upper(), "cessation_of_operation") == [kmar.serial]
    for kit in (douane, kmar):
        with pytest.raises(pki.PkiError) as excinfo:
            pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", root / "crl.pem")
        assert _rule(excinfo) == "revoked"
        assert f"'{kit.subject}'" in excinfo.value.message
    assert pki.check_peer(keep.cert.read_bytes(), root / "ca.pem", root / "crl.pem").subject == "om"

    crl = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(douane.serial, 16))
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    shown = {i.subject: i for i in pki.show(root)}
    assert shown["douane"].revoked and shown["douane"].revocation_reason == "key_compromise"
    assert not shown["om"].revoked


def test_crl_from_another_root_is_refused(root: Path, other_root: Path) -> None:
    kit = pki.issue(root, "politie", "node", org="politie")
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(kit.cert.read_bytes(), root / "ca.pem", other_root / "crl.pem")
    assert _rule(excinfo) == "bad_crl"


def test_reissue_needs_replace_and_supersedes_old_certificate(root: Path) -> None:
    first = pki.issue(root, "douane", "node", org="douane")
    with pytest.raises(pki.PkiError) as excinfo:
        pki.issue(root, "douane", "node", org="douane")
    assert _rule(excinfo) == "exists"
    second = pki.issue(root, "douane", "node", org="douane", replace=True)
    # The kit folder now holds the new certificate; the old one stays in issued/ and goes on the CRL.
    assert second.cert == first.cert and second.serial != first.serial
    old_pem = (root / "issued" / f"{first.serial}.pem").read_bytes()
    with pytest.raises(pki.PkiError) as excinfo:
        pki.check_peer(old_pem, root / "ca.pem", root / "crl.pem")
    assert _rule(excinfo) == "revoked"
    assert pki.check_peer(second.cert.read_bytes(), root / "ca.pem", root / "crl.pem").serial == second.serial
    reasons = {i.serial: i.revocation_reason for i in pki.show(root)}
    assert reasons == {first.serial: "superseded", second.serial: None}


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda d: pki.issue(d, "x y", "node"), "bad_subject"),
        (lambda d: pki.issue(d, "../escape", "node"), "bad_subject"),
        (lambda d: pki.issue(d, "n", "superuser"), "bad_role"),
        (lambda d: pki.issue(d, "n", "node", hosts=["not a host"]), "bad_host"),
        (lambda d: pki.issue(d, "n", "node", days=0), "bad_days"),
        (lambda d: pki.revoke(d, "nobody"), "not_found"),
        (lambda d: pki.revoke(d, "n", "because"), "bad_reason"),
        (lambda d: pki.init_root(d), "exists"),
        (lambda d: pki.issue(d / "missing", "n", "node"), "no_root"),
        (lambda d: pki.check_peer(b"not a certificate", d / "ca.pem"), "bad_certificate"),
        (
            lambda d: pki.load_identity(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "bad_certificate",
        ),
    ],
)
def test_bad_input_raises_named_rule(root: Path, call: Callable[[Path], object], rule: str) -> None:
    with pytest.raises(pki.PkiError) as excinfo:
        call(root)
    assert _rule(excinfo) == rule
    assert excinfo.value.message and "\n" not in excinfo.value.message


# ---------------------------------------------------------------- real gRPC mutual TLS


@pytest.fixture()
def mtls_server(root: Path) -> Iterator[tuple[int, Path]]:
    coordinator = pki.issue(root, "coordinator", "coordinator")

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            ident = pki.check_grpc_peer(context, root / "ca.pem", root / "crl.pem", expected_roles={"node"})
        except pki.PkiError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{exc.rule}: {exc.message}")
        return f"{ident.subject}/{ident.role}/{ident.org}".encode() + b":" + request

    handler = grpc.method_handlers_generic_handler(
        "test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    creds = pki.grpc_server_credentials(coordinator.cert, coordinator.key, coordinator.ca)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield port, root
    finally:
        server.stop(None)


def _call(port: int, kit: pki.Kit, ca: Path | None = None) -> bytes:
    creds = pki.grpc_channel_credentials(kit.cert, kit.key, ca or kit.ca)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        return channel.unary_unary("/test.Identity/WhoAmI")(b"ping", timeout=5)


def test_grpc_mutual_tls_accepts_federation_client(mtls_server: tuple[int, Path]) -> None:
    port, root = mtls_server
    node = pki.issue(root, "douane", "node", org="douane")
    assert _call(port, node) == b"douane/node/douane:ping"


def test_grpc_mutual_tls_rejects_client_from_other_ca(
    mtls_server: tuple[int, Path], other_root: Path
) -> None:
    port, _ = mtls_server
    # The stranger trusts our root, so only the server's check of the client certificate can stop it.
    stranger = pki.issue(other_root, "douane", "node", org="douane")
    with pytest.raises(grpc.RpcError) as excinfo:
        _call(port, stranger, ca=mtls_server[1] / "ca.pem")
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_client_refuses_server_from_other_ca(mtls_server: tuple[int, Path], other_root: Path) -> None:
    port, root = mtls_server
    node = pki.issue(root, "om", "node", org="om")
    with pytest.raises(grpc.RpcError) as excinfo:
        _call(port, node, ca=other_root / "ca.pem")
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_revoked_and_wrong_role_clients_are_refused_by_peer_check(mtls_server: tuple[int, Path]) -> None:
    port, root = mtls_server
    node = pki.issue(root, "kmar", "node", org="kmar")
    analyst = pki.issue(root, "analyst-kmar", "analyst", org="kmar")
    pki.revoke(root, "kmar", "key_compromise")
    for kit, rule in ((node, "revoked"), (analyst, "wrong_role")):
        with pytest.raises(grpc.RpcError) as excinfo:
            _call(port, kit)
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert excinfo.value.details().startswith(f"{rule}:")
        assert kit.subject in excinfo.value.details()


# ---------------------------------------------------------------- command line


def test_cli_issue_federation_show_and_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    pki_dir, out = tmp_path / "pki", tmp_path / "kits"
    result = runner.invoke(pki_app, ["issue-federation", "--dir", str(pki_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = {"coordinator"} | set(PARTNERS)
    expected |= {f"analyst-{p}" for p in PARTNERS} | {f"privacy-officer-{p}" for p in PARTNERS}
    assert {p.name for p in out.iterdir()} == expected
    roles = {i.subject: (i.role, i.org) for i in pki.show(pki_dir)}
    assert roles["belastingdienst"] == ("node", "belastingdienst")
    assert roles["privacy-officer-om"] == ("privacy_officer", "om")
    assert roles["coordinator"] == ("coordinator", None)

    result = runner.invoke(pki_app, ["revoke", "kmar", "--reason", "key_compromise", "--dir", str(pki_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(pki_app, ["show", "--dir", str(pki_dir), "--wide"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    kmar = next(i for i in pki.show(pki_dir) if i.subject == "kmar")
    assert kmar.serial in result.output and kmar.fingerprint in result.output
    assert "revoked: key_compromise" in result.output

    result = runner.invoke(
        pki_app, ["issue", "analyst-extra", "--role", "analyst", "--org", "om", "--dir", str(pki_dir)]
    )
    assert result.exit_code == 0, result.output
    assert (pki_dir / "kits" / "analyst-extra" / "key.pem").exists()


def test_cli_errors_are_one_line_with_exit_code_1(tmp_path: Path) -> None:
    runner = CliRunner()
    pki_dir = tmp_path / "pki"
    assert runner.invoke(pki_app, ["init", "--dir", str(pki_dir)]).exit_code == 0
    cases = [
        ["init", "--dir", str(pki_dir)],
        ["issue", "bad name", "--role", "node", "--dir", str(pki_dir)],
        ["revoke", "nobody", "--dir", str(pki_dir)],
        ["show", "--dir", str(tmp_path / "empty")],
        ["issue-federation", "--dir", str(pki_dir)],
    ]
    for args in cases:
        result = runner.invoke(pki_app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output
