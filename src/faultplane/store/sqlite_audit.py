"""The audit key and anchor on a SQLite store: what `SqliteStore` adds to `SqliteDb`.

`SqliteStore(path, audit_key=key)` keys every audit entry it appends with `key` and
anchors the chain head in `audit.anchor` next to the key (faultplane.store.anchor). The
anchor line for an append is written only after its transaction COMMITs, so this class
wraps SqliteDb's write transaction: `_append_audit` (in SqliteStore) records the head it
appended, and the wrapper hands it to the anchor once the commit succeeded, under the
same lock, so one process's lines are in seq order. Without a key nothing changes: the
chain is plain sha256, as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from faultplane.store.anchor import (
    ANCHOR_INTERVAL,
    AnchorCheck,
    AnchorWriter,
    anchor_path,
    anchor_size,
    check_anchor,
)
from faultplane.store.audit import AuditRow, verify_chain
from faultplane.store.audit_key import AuditKey
from faultplane.store.base import AuditVerdict
from faultplane.store.sqlite_db import SqliteDb


class KeyedAuditDb(SqliteDb):
    """SqliteDb with an optional audit key; `anchor_writes=False` for a reader that must
    never write the anchor file (offline `faultplane audit verify`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 30.0,
        audit_key: AuditKey | None = None,
        anchor_writes: bool = True,
    ) -> None:
        super().__init__(path, busy_timeout=busy_timeout)
        self.audit_key = audit_key
        self._appended_head: tuple[int, str] | None = None
        self._anchor: AnchorWriter | None = None
        if audit_key is not None and anchor_writes:
            self._anchor = AnchorWriter(audit_key)
            try:
                self._anchor.start(self._stored_head())
            except BaseException:
                super().close()
                raise

    def _stored_head(self) -> tuple[int, str] | None:
        with self._read() as conn:
            row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """SqliteDb's write transaction; an audit head appended inside it is anchored
        after COMMIT (a line naming a rolled-back entry would be a false alarm)."""
        with self._lock:
            self._appended_head = None
            with super()._write(durable) as conn:
                yield conn
            head, self._appended_head = self._appended_head, None
            if head is not None and self._anchor is not None:
                self._anchor.note(*head)

    def close(self) -> None:
        """Anchor the last head, then close the database."""
        if self._anchor is not None:
            self._anchor.close()
        super().close()

    def _verify_keyed(self) -> AuditVerdict:
        """Walk the chain (keyed entries against the key) and, with a key, check every
        anchored head against the same snapshot."""
        key = self.audit_key
        size = anchor_size(key) if key is not None else None  # before the snapshot
        with self._read() as conn:
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            rows = conn.execute(
                "SELECT seq, at, entry, prev_hash, hash, injection_id, scheme FROM audit "
                "ORDER BY seq"
            )
            verdict = verify_chain((AuditRow(*row) for row in rows), head, key)
            if key is None or not verdict.ok:
                return verdict

            def hash_at(seq: int) -> str | None:
                row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
                return None if row is None else str(row[0])

            check = check_anchor(key, size, hash_at, verdict.entries)
        return anchored_verdict(verdict, check, key)


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
