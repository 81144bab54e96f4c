"""The audit key: a secret kept outside the store that keys the audit chain.

A plain sha256 chain only proves that nobody edited the log *without recomputing it*:
anyone who can write the SQLite file can rewrite an entry and recompute every hash after
it. Keying each entry with HMAC-SHA256 under a 32-byte secret that lives in another file
(`--audit-key-file`, default `audit.key` next to the database) means that rewriting the
store is no longer enough: the attacker would also need to read the key. That is only a
guarantee if the key is private, so a key file that group or others may access is
refused by every writer, and the file is created 0600 (in a 0700 directory if it has to
create that too).

Entries are marked with the scheme that hashed them (`sha256` for entries written before
the key existed, `hmac-sha256/<key id>` after), so an old log keeps verifying. The key id
is a hash of the key, safe to store next to the entries: it tells "verified with the
wrong key" apart from "edited".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from faultplane.store.base import StoreError
from faultplane.store.private_files import make_private_dir

KEY_BYTES = 32
KEY_FILE_NAME = "audit.key"
SHA256_SCHEME = "sha256"
HMAC_SCHEME = "hmac-sha256"
_ID_CONTEXT = b"faultplane audit key id\n"
_ANCHOR_CONTEXT = b"faultplane audit anchor\n"


class AuditKeyError(StoreError):
    """The audit key file cannot be used; the message names the path and what to do."""


def default_key_path(db_path: str | Path) -> Path:
    """`audit.key` in the database's directory."""
    return Path(db_path).parent / KEY_FILE_NAME


@dataclass(frozen=True)
class AuditKey:
    """The secret and where it came from. The secret never appears in a repr."""

    secret: bytes = field(repr=False)
    path: Path
    loose_mode: int | None = None  # set (by read_audit_key) if group/others may access it

    @property
    def id(self) -> str:
        """16 hex chars naming the key; reveals nothing usable about the secret."""
        return hashlib.sha256(_ID_CONTEXT + self.secret).hexdigest()[:16]

    @property
    def scheme(self) -> str:
        """The scheme marker stored with every entry this key hashes."""
        return f"{HMAC_SCHEME}/{self.id}"

    def entry_hash(self, prev_hash: str, payload: str) -> str:
        """HMAC-SHA256 (hex) over exactly what the unkeyed chain hashes."""
        return hmac.new(self.secret, (prev_hash + payload).encode("utf-8"), "sha256").hexdigest()

    def anchor_mac(self, payload: str) -> str:
        """The MAC of one anchor line; a distinct context, so it can never pass as an entry."""
        message = _ANCHOR_CONTEXT + payload.encode("utf-8")
        return hmac.new(self.secret, message, "sha256").hexdigest()


def open_audit_key(path: str | Path) -> AuditKey:
    """The key for a writer (serve, token create/revoke): created if missing, refused if
    group or others may access it, or if it is too short to be a key."""
    path = Path(path)
    try:
        return _load(path, strict=True)
    except FileNotFoundError:
        pass
    _create(path)
    return _load(path, strict=True)


def read_audit_key(path: str | Path) -> AuditKey:
    """The key for a verifier: never created. A loose mode is reported, not refused (the
    log can still be checked, but the keyed guarantee is only as private as the key)."""
    path = Path(path)
    try:
        return _load(path, strict=False)
    except FileNotFoundError:
        raise AuditKeyError(f"{path}: no such audit key file") from None


def _load(path: Path, strict: bool) -> AuditKey:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot open the audit key: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AuditKeyError(f"{path}: the audit key must be a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and strict:
            raise AuditKeyError(
                f"{path}: the audit key is accessible by group or others (mode {mode:04o}); "
                f"whoever can read it can rewrite the audit log undetected. "
                f"Run `chmod 600 {path}` (and rotate the key if others may have read it)"
            )
        secret = _read_all(fd)
    finally:
        os.close(fd)
    if len(secret) < KEY_BYTES:
        raise AuditKeyError(
            f"{path}: holds {len(secret)} bytes; an audit key is at least {KEY_BYTES} random "
            "bytes (delete it only if the log was never keyed with it)"
        )
    return AuditKey(secret, path, mode if mode & 0o077 else None)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _create(path: Path) -> None:
    """32 random bytes, 0600, written and fsynced before the name appears (so a reader
    never sees a short key); losing a race with another process is fine: theirs wins."""
    make_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot create the audit key: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if another process created the key meanwhile
    except FileExistsError:
        pass
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot create the audit key: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)
