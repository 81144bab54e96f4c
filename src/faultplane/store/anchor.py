"""The audit anchor: the chain head, signed, in an append-only file outside the database.

Keying the chain stops an attacker from forging entries, but not from cutting the log
short: deleting the last entries and rewriting the `audit_head` row leaves a shorter
chain that is still perfectly keyed. So every keyed writer also appends the head it
committed — `{"seq", "hash", "at", "key", "mac"}`, one JSON line, MAC'd with the audit
key — to `audit.anchor` next to the key. Verification checks every line against the
database: an anchored entry that is missing, or whose hash changed, is a break, however
consistent the rest of the database looks.

Cadence. A line is written after the COMMIT that appended the entry (never before: a
line naming a rolled-back entry would be a false alarm), at most one line per
ANCHOR_INTERVAL seconds; an entry appended within the interval is anchored by a timer
when it runs out, and by close(). So the anchor trails the log by at most about a second
(more only if the process is SIGKILLed in between), and a busy server writes ~13 MB of
anchor a day instead of one line per API call. Lines are single O_APPEND writes, so
several processes (the server, `faultplane token`) can share the file.

The file is only as append-only as its storage makes it: for a real guarantee put the
key and anchor where the database's writers cannot write (`--audit-key-file`), or make
the file append-only (`chattr +a`) or ship it to a log collector.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from faultplane.store.audit import GENESIS_HASH
from faultplane.store.audit_key import AuditKey
from faultplane.store.base import AuditVerdict
from faultplane.store.private_files import make_private_dir

ANCHOR_FILE_NAME = "audit.anchor"
ANCHOR_INTERVAL = 1.0

log = structlog.get_logger("faultplane.store")


def anchor_path(key: AuditKey) -> Path:
    """`audit.anchor` next to the key file."""
    return key.path.parent / ANCHOR_FILE_NAME


def _payload(seq: int, digest: str, at: float) -> str:
    return json.dumps({"at": at, "hash": digest, "seq": seq}, sort_keys=True, separators=(",", ":"))


def signed_line(key: AuditKey, seq: int, digest: str, at: float) -> bytes:
    line = {"seq": seq, "hash": digest, "at": at, "key": key.id,
            "mac": key.anchor_mac(_payload(seq, digest, at))}  # fmt: skip
    return (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")


class AnchorWriter:
    """Appends signed heads to the anchor file, rate-limited (see the module docstring).

    Thread-safe: note() is called after commits on the store's writer thread, the timer
    flushes on its own thread.
    """

    def __init__(self, key: AuditKey, interval: float = ANCHOR_INTERVAL) -> None:
        self.key = key
        self.path = anchor_path(key)
        self._interval = interval
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending: tuple[int, str] | None = None
        self._last_write = -float("inf")
        self._timer: threading.Timer | None = None
        self._closed = False

    def start(self, head: tuple[int, str] | None) -> None:
        """Create the anchor file, anchored at the current head, if it does not exist yet:
        from the first time a keyed writer opens the store, the anchor always exists."""
        if self.path.exists():
            return
        seq, digest = head if head is not None else (0, GENESIS_HASH)
        with self._lock:
            self._write(seq, digest)

    def note(self, seq: int, digest: str) -> None:
        """A committed head: written now, or within the interval by the timer."""
        with self._lock:
            if self._closed:
                return
            self._pending = (seq, digest)
            wait = self._last_write + self._interval - time.monotonic()
            if wait <= 0:
                self._flush_locked()
            elif self._timer is None:
                timer = threading.Timer(wait, self.flush)
                timer.daemon = True
                try:
                    timer.start()
                except RuntimeError:  # no thread to be had: anchor now rather than never
                    self._flush_locked()
                    return
                self._timer = timer

    def flush(self) -> None:
        with self._lock:
            self._timer = None
            self._flush_locked()

    def close(self) -> None:
        """Anchor what is pending and close the file; later notes are ignored."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_locked()
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _flush_locked(self) -> None:
        if self._pending is not None:
            self._write(*self._pending)

    def _write(self, seq: int, digest: str) -> None:
        """One O_APPEND write. A failure is logged, not raised: the entry is committed,
        and the next head anchored covers it (raising would make a caller retry and
        append the entry twice)."""
        try:
            if self._fd is None:
                make_private_dir(self.path.parent)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, signed_line(self.key, seq, digest, time.time()))
        except OSError as exc:
            log.error("cannot write the audit anchor", path=str(self.path), seq=seq,
                      error=exc.strerror)  # fmt: skip
            return
        self._pending = None
        self._last_write = time.monotonic()


@dataclass(frozen=True)
class AnchorCheck:
    """What the anchor file says about the log: a problem (and the seq it concerns), or
    the highest seq the file anchors and checked against the database."""

    problem: str = ""
    broken_at: int | None = None
    anchored_seq: int = 0
    lines: int = 0
    torn: bool = False  # the last line was cut short (a crash mid-write): ignored
    missing: bool = False


def anchor_size(key: AuditKey) -> int | None:
    """The file's size now, or None if there is none. Taken BEFORE the database snapshot
    that check_anchor compares with: lines are written after their COMMIT, so every line
    within this size names an entry the snapshot can see."""
    try:
        return anchor_path(key).stat().st_size
    except FileNotFoundError:
        return None


def check_anchor(
    key: AuditKey, size: int | None, hash_at: Callable[[int], str | None], entries: int
) -> AnchorCheck:
    """Check every signed head in the first `size` bytes against `hash_at(seq)` (the
    stored hash of entry seq, None if there is no such entry)."""
    path = anchor_path(key)
    if size is None:
        if entries == 0:
            return AnchorCheck(missing=True)
        return AnchorCheck(
            problem=f"the anchor file {path} is missing: every keyed writer creates it, so it "
            "was deleted or moved, and the end of the log cannot be checked",
            missing=True,
        )
    try:
        with path.open("rb") as file:
            data = file.read(size)
    except OSError as exc:
        return AnchorCheck(problem=f"cannot read the anchor file {path}: {exc.strerror}")
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # a final line without its newline: a write cut short
    anchored, count = 0, 0
    for number, raw in enumerate(lines[:-1], start=1):
        count += 1
        head, problem = _parse(key, raw, number)
        if problem:
            return AnchorCheck(problem=f"anchor file {path}: {problem}", lines=count)
        seq, digest, at = head
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        if seq == 0:
            stored: str | None = GENESIS_HASH
        else:
            stored = hash_at(seq)
        if stored is None:
            return AnchorCheck(
                problem=f"entry {seq} is missing, but the anchor file recorded it at {when} "
                "(entries were deleted from the log)",
                broken_at=seq,
                lines=count,
            )
        if stored != digest:
            return AnchorCheck(
                problem=f"entry {seq}: hash differs from the head anchored at {when} "
                "(the log was rewritten)",
                broken_at=seq,
                lines=count,
            )
        anchored = max(anchored, seq)
    return AnchorCheck(anchored_seq=anchored, lines=count, torn=torn)


def _parse(key: AuditKey, raw: bytes, number: int) -> tuple[tuple[int, str, float], str]:
    """(seq, hash, at) of one line, or the problem with it."""
    try:
        line = json.loads(raw)
        seq, digest, at, mac = line["seq"], line["hash"], line["at"], line["mac"]
        valid = (
            isinstance(seq, int) and seq >= 0 and isinstance(digest, str)
            and isinstance(at, (int, float)) and isinstance(mac, str)
        )  # fmt: skip
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        return (0, "", 0.0), f"line {number} is not a signed chain head"
    if line.get("key") != key.id:
        return (0, "", 0.0), (
            f"line {number} was signed with another audit key (id {line.get('key')}; "
            f"this key is {key.id})"
        )
    if not hmac.compare_digest(line["mac"], key.anchor_mac(_payload(seq, digest, at))):
        return (0, "", 0.0), f"line {number}: signature does not match (edited or forged)"
    return (seq, digest, float(at)), ""


def anchored_verdict(verdict: AuditVerdict, check: AnchorCheck, key: AuditKey) -> AuditVerdict:
    """A chain verdict (that held) with what the anchor file adds to it."""
    if check.problem:
        return replace(verdict, ok=False, broken_at=check.broken_at, problem=check.problem)
    path = anchor_path(key)
    if check.missing:  # only acceptable for an empty log
        note = f"no anchor file ({path}) yet: nothing has been appended with the key"
        return replace(verdict, unchecked=(*verdict.unchecked, note))
    text = f"head matches the anchor file up to seq {check.anchored_seq} ({path})"
    if check.anchored_seq < verdict.entries:
        text += (
            f"; entries {check.anchored_seq + 1}..{verdict.entries} are newer than the last "
            f"anchored head (it trails the log by up to {ANCHOR_INTERVAL:g} s)"
        )
    unchecked = verdict.unchecked
    if check.torn:
        unchecked += ("the anchor file's last line was cut short (a crash mid-write): ignored",)
    return replace(verdict, checked=(*verdict.checked, text), unchecked=unchecked)
