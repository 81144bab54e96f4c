"""The audit chain on SQLite: appending, paging and verifying, keyed or not.

`SqliteStore(path, audit_key=key)` keys every audit entry it appends with `key` and
anchors the chain head in `audit.anchor` next to the key (faultplane.store.anchor). The
anchor line for an append is written only after its transaction COMMITs (a line naming a
rolled-back entry would be a false alarm): `append_in` hands the head it appended to
`SqliteDb.after_commit`, which runs under the write lock, so one process's lines are in
seq order. Without a key nothing changes: the chain is plain sha256.
"""

from __future__ import annotations

import json
import sqlite3
import time

from faultplane.store.anchor import (
    AnchorWriter,
    anchor_size,
    anchored_verdict,
    check_anchor,
)
from faultplane.store.audit import GENESIS_HASH, AuditRow, canonical_json, seal_entry, verify_chain
from faultplane.store.audit_key import AuditKey
from faultplane.store.base import AuditEntry, AuditVerdict, JsonDict
from faultplane.store.sqlite_db import SqliteDb, dumps_body


class SqliteAudit:
    """The `AuditRepository` on a SqliteDb; `anchor_writes=False` for a reader that must
    never write the anchor file (offline `faultplane audit verify`)."""

    def __init__(
        self, db: SqliteDb, key: AuditKey | None = None, *, anchor_writes: bool = True
    ) -> None:
        self._db = db
        self.key = key
        self._anchor: AnchorWriter | None = None
        if key is not None and anchor_writes:
            self._anchor = AnchorWriter(key)
            self._anchor.start(self._stored_head())

    def append(self, entry: JsonDict) -> AuditEntry:
        with self._db.write() as conn:
            return self.append_in(conn, entry)

    def append_in(self, conn: sqlite3.Connection, entry: JsonDict) -> AuditEntry:
        """Chain `entry` inside the caller's write transaction (`SqliteDb.write`)."""
        # Hash the entry as it will read back from storage, so verification reproduces it.
        normal = json.loads(dumps_body(entry, "audit entry"))
        raw_at = normal.get("at")
        at = float(raw_at) if raw_at is not None else time.time()
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if head is None:  # first append, or the head row was lost: chain from the last row
            head = conn.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone() or (0, GENESIS_HASH)
        seq, prev_hash = head[0] + 1, head[1]
        scheme, digest = seal_entry(prev_hash, seq, at, normal, self.key)
        injection_id = normal.get("injection_id")
        conn.execute(
            "INSERT INTO audit (seq, at, injection_id, entry, prev_hash, hash, scheme) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                at,
                None if injection_id is None else str(injection_id),
                canonical_json(normal),
                prev_hash,
                digest,
                scheme,
            ),
        )
        conn.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, digest),
        )
        if (anchor := self._anchor) is not None:
            self._db.after_commit(lambda: anchor.note(seq, digest))
        return AuditEntry(seq, at, normal, prev_hash, digest)

    def entries(
        self,
        injection_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        after_seq: int = 0,
        max_bytes: int | None = None,
    ) -> list[AuditEntry]:
        """Entries oldest first (by seq); `since` is inclusive, `limit` keeps the first N,
        `after_seq` starts after that entry (a page), `max_bytes` stops once the entries'
        stored text reaches it (the entry that reaches it is included, so at least one)."""
        clauses: list[str] = ["seq > ?"]
        params: list[str | float] = [after_seq]
        if injection_id is not None:
            clauses.append("injection_id = ?")
            params.append(injection_id)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        params.append(-1 if limit is None else max(limit, 0))
        entries: list[AuditEntry] = []
        total = 0
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT seq, at, entry, prev_hash, hash FROM audit "
                f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
                params,
            )
            # Row by row, not fetchall: a page stops at max_bytes without first reading
            # every row the query matches into memory.
            for seq, at, text, prev_hash, digest in rows:
                entries.append(AuditEntry(seq, at, json.loads(text), prev_hash, digest))
                total += len(text)
                if max_bytes is not None and total >= max_bytes:
                    break
        return entries

    def verify(self) -> AuditVerdict:
        """Walk the chain (keyed entries against the key) and, with a key, check every
        anchored head against the same snapshot."""
        key = self.key
        size = anchor_size(key) if key is not None else None  # before the snapshot
        with self._db.read() as conn:
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

    def close(self) -> None:
        """Anchor the last head; later appends are no longer anchored."""
        if self._anchor is not None:
            self._anchor.close()

    def _stored_head(self) -> tuple[int, str] | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None
