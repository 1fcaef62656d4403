"""``federation pki``: commands a federation admin uses to run the development or production PKI."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from federation import pki
from protocols.errors import FederationError

PARTNERS: tuple[str, ...] = ("politie", "om", "fiod", "douane", "belastingdienst", "kmar")
DEFAULT_DIR = Path(".federation/pki")

pki_app = typer.Typer(
    help="Federation PKI: create the root CA, issue certificate kits for partners and people, revoke them.",
    no_args_is_help=True,
)

# soft_wrap keeps each message on one line whatever the terminal width.
_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")


class RoleChoice(StrEnum):
    coordinator = "coordinator"
    node = "node"
    analyst = "analyst"
    privacy_officer = "privacy_officer"
    operator = "operator"
    admin = "admin"


class ReasonChoice(StrEnum):
    unspecified = "unspecified"
    key_compromise = "key_compromise"
    ca_compromise = "ca_compromise"
    affiliation_changed = "affiliation_changed"
    superseded = "superseded"
    cessation_of_operation = "cessation_of_operation"
    certificate_hold = "certificate_hold"
    privilege_withdrawn = "privilege_withdrawn"


DirOption = Annotated[Path, typer.Option("--dir", "-d", help="PKI folder holding the root CA and index.")]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Folder to write kits into (default: <dir>/kits).")
]


def _run(action: Callable[[], T]) -> T:
    """Turn refusals into one line on stderr and exit code 1, never a traceback."""
    try:
        return action()
    except OSError as exc:
        # A PKI folder that cannot be read or written is the user's to fix: name the file.
        failure: FederationError = FederationError(
            "pki_files", f"{exc.strerror or exc} ({exc.filename or 'file'})"
        )
    except FederationError as exc:
        failure = exc
    _err.print(f"error: {failure}", markup=False, highlight=False)
    raise typer.Exit(1)


def _kit_line(kit: pki.Kit) -> str:
    return f"issued {kit.role} '{kit.subject}' serial {kit.serial} -> {kit.folder}"


@pki_app.command("init")
def init_cmd(
    dir: DirOption = DEFAULT_DIR,
    name: Annotated[str, typer.Option(help="Common name of the root CA.")] = "MIT Federation Root",
    days: Annotated[int, typer.Option(help="Validity of the root in days.")] = 3650,
) -> None:
    """Create the federation root CA (EC P-256) in the PKI folder."""
    path = _run(lambda: pki.init_root(dir, name=name, days=days))
    _out.print(
        f"root CA '{name}' written to {path}; private key {dir / pki.CA_KEY} (mode 0600)", markup=False
    )


@pki_app.command("issue")
def issue_cmd(
    subject: Annotated[str, typer.Argument(help="Node id (e.g. douane), 'coordinator', or a person's id.")],
    role: Annotated[RoleChoice, typer.Option("--role", "-r", help="Role carried in the certificate.")],
    org: Annotated[str | None, typer.Option(help="Partner the holder belongs to (node id).")] = None,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP for coordinator/node certificates; repeatable."),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    dir: DirOption = DEFAULT_DIR,
    out: OutOption = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Revoke the subject's active certificate as superseded.")
    ] = False,
) -> None:
    """Issue a certificate and write its kit folder (cert.pem, key.pem, ca.pem, README.txt)."""
    hosts = tuple(host) if host else pki.DEFAULT_HOSTS
    kit = _run(
        lambda: pki.issue(dir, subject, role.value, org=org, hosts=hosts, days=days, out=out, replace=replace)
    )
    _out.print(_kit_line(kit), markup=False)


@pki_app.command("revoke")
def revoke_cmd(
    serial_or_subject: Annotated[
        str, typer.Argument(help="Subject (all its active certificates) or hex serial.")
    ],
    reason: Annotated[
        ReasonChoice, typer.Option(help="RFC 5280 revocation reason.")
    ] = ReasonChoice.unspecified,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Revoke certificates and rewrite crl.pem; copy it to the coordinator and nodes afterwards."""
    serials = _run(lambda: pki.revoke(dir, serial_or_subject, reason.value))
    for serial in serials:
        _out.print(f"revoked serial {serial} ({reason.value})", markup=False)
    _out.print(f"CRL updated: {dir / pki.CRL_FILE}", markup=False)


@pki_app.command("show")
def show_cmd(
    dir: DirOption = DEFAULT_DIR,
    wide: Annotated[bool, typer.Option("--wide", help="Add the full SHA-256 fingerprints.")] = False,
) -> None:
    """List every certificate issued from the PKI folder."""
    infos = _run(lambda: pki.show(dir))
    table = Table(title=f"Certificates in {dir}")
    table.add_column("subject", overflow="fold")
    table.add_column("role", overflow="fold")
    table.add_column("org", overflow="fold")
    # Serials are what 'revoke' takes, so they stay in one copyable piece.
    table.add_column("serial", no_wrap=True)
    table.add_column("not after", no_wrap=True)
    table.add_column("status", overflow="fold")
    if wide:
        table.add_column("sha-256 fingerprint", no_wrap=True)
    for info in infos:
        status = f"revoked: {info.revocation_reason}" if info.revoked else "valid"
        row = [
            info.subject,
            info.role,
            info.org or "",
            info.serial,
            info.not_after.date().isoformat(),
            status,
        ]
        table.add_row(*row, *([info.fingerprint] if wide else []))
    _out.print(table)


def issue_federation(
    dir: Path, out: Path | None, coordinator_hosts: tuple[str, ...], days: int
) -> list[pki.Kit]:
    """Root + coordinator + one node per partner + an analyst and a privacy officer per partner."""
    if (dir / pki.CA_CERT).exists():
        raise pki.PkiError(
            "exists", f"{dir} already holds a root CA; use an empty folder for a new federation"
        )
    pki.init_root(dir)
    kits = [pki.issue(dir, "coordinator", "coordinator", hosts=coordinator_hosts, days=days, out=out)]
    for partner in PARTNERS:
        kits.append(pki.issue(dir, partner, "node", org=partner, days=days, out=out))
        kits.append(pki.issue(dir, f"analyst-{partner}", "analyst", org=partner, days=days, out=out))
        kits.append(
            pki.issue(dir, f"privacy-officer-{partner}", "privacy_officer", org=partner, days=days, out=out)
        )
    return kits


@pki_app.command("issue-federation")
def issue_federation_cmd(
    dir: DirOption = DEFAULT_DIR,
    out: OutOption = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Coordinator DNS name or IP; repeatable.")
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of the issued certificates in days.")] = 365,
) -> None:
    """Create a demo federation: root, coordinator, six partner nodes, analysts and privacy officers."""
    hosts = tuple(host) if host else pki.DEFAULT_HOSTS
    kits = _run(lambda: issue_federation(dir, out, hosts, days))
    for kit in kits:
        _out.print(_kit_line(kit), markup=False)
    _out.print(f"{len(kits)} kits issued; root CA in {dir}", markup=False)
