"""The node's secret key files: one way to create, store and read each of them.

Every secret is a 32-byte seed in its own file of mode 0600 in the node's state folder, one key
per kind of statement (audit signatures, SecAgg advertisements, the differencing HMAC). A key is
written under a unique name and hard-linked into place, so a reader never sees half a key and a
concurrent creator never replaces the key that won.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.errors import FederationError

SEED_BYTES = 32
SECAGG_KEY_FILE = "secagg_signing.key"
DIFFERENCING_KEY_FILE = "differencing.key"


def load_or_create_seed(path: Path, rule: str) -> bytes:
    """The 32-byte seed in ``path``, made from the OS's random source on first use.

    Refused with ``rule`` when the file is not a 32-byte seed, is readable by others, or cannot be
    read or written.
    """
    path = Path(path)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_secret(path, os.urandom(SEED_BYTES))
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise FederationError(rule, f"key file {path.name} is readable by others (mode {mode:04o})")
        seed = path.read_bytes()
    except OSError as exc:
        raise FederationError(
            rule, f"key file {path.name} cannot be read or created ({exc.strerror})"
        ) from None
    if len(seed) != SEED_BYTES:
        raise FederationError(rule, f"key file {path.name} does not hold a {SEED_BYTES}-byte seed")
    return seed


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``, durably; if it already exists, leave it be."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: its key wins
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name survives a crash too
    finally:
        os.close(dir_fd)


def load_or_create_secagg_key(state_dir: Path) -> Ed25519PrivateKey:
    """The Ed25519 key that signs this node's SecAgg advertisements.

    Kept apart from the audit signing key so that one key never signs two kinds of statement.
    """
    seed = load_or_create_seed(Path(state_dir) / SECAGG_KEY_FILE, "secagg_key_invalid")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_or_create_differencing_key(state_dir: Path) -> bytes:
    """The HMAC key that pseudonymises units in the differencing store; it never leaves the node."""
    return load_or_create_seed(Path(state_dir) / DIFFERENCING_KEY_FILE, "differencing")
