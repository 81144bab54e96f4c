"""The audit chain on PostgreSQL: appending, paging and verifying, keyed or not.

One chain for every process on the database. An append first takes the transaction-scoped
advisory lock AUDIT_CHAIN_LOCK, then reads the head: at READ COMMITTED that read sees the
previous holder's commit, and the lock is held until this transaction commits or rolls
back, so two appends (threads, servers, replicas) never read the same head and the chain
never forks. The lock lives in the transaction, so a process killed mid-append releases
it with its connection. It is the last lock a transaction takes (a transition's rows are
written first), and its holder waits for no other lock, so it cannot be part of a
deadlock; its hold time is one head read and two inserts.

With an audit key (`PostgresStore(url, audit_key=key)`) entries are keyed and the head is
anchored in `audit.anchor` next to the key (faultplane.store.anchor) after COMMIT, exactly
as the SQLite store does. Commits of different pooled connections may finish in any
order, so this process anchors a head only if it is newer than the last one it noted.
"""

from __future__ import annotations

import json
import threading
import time

from faultplane.store.anchor import AnchorWriter, anchor_size, anchored_verdict, check_anchor
from faultplane.store.audit import GENESIS_HASH, AuditRow, canonical_json, seal_entry, verify_chain
from faultplane.store.audit_key import AuditKey
from faultplane.store.base import AuditEntry, AuditVerdict, JsonDict
from faultplane.store.postgres_db import PostgresDb, Tx
from faultplane.store.postgres_schema import AUDIT_CHAIN_LOCK
from faultplane.store.sqlite_db import dumps_body

_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"


class PostgresAudit:
    """The `AuditRepository` on a PostgresDb; `anchor_writes=False` for a reader that must
    never write the anchor file (an offline verify)."""

    def __init__(
        self, db: PostgresDb, key: AuditKey | None = None, *, anchor_writes: bool = True
    ) -> None:
        self._db = db
        self.key = key
        self._anchor: AnchorWriter | None = None
        self._noted_lock = threading.Lock()
        self._noted = 0
        if key is not None and anchor_writes:
            self._anchor = AnchorWriter(key)
            self._anchor.start(self._stored_head())

    def append(self, entry: JsonDict) -> AuditEntry:
        with self._db.write() as tx:
            return self.append_in(tx, entry)

    def append_in(self, tx: Tx, entry: JsonDict) -> AuditEntry:
        """Chain `entry` inside the caller's write transaction (`PostgresDb.write`)."""
        # Hash the entry as it will read back from storage, so verification reproduces it.
        normal = json.loads(dumps_body(entry, "audit entry"))
        raw_at = normal.get("at")
        at = float(raw_at) if raw_at is not None else time.time()
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_CHAIN_LOCK,))
        head = tx.execute(_HEAD).fetchone()
        if head is None:  # first append, or the head row was lost: chain from the last row
            head = tx.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev_seq, prev_hash = head if head is not None else (0, GENESIS_HASH)
        seq = int(prev_seq) + 1
        scheme, digest = seal_entry(prev_hash, seq, at, normal, self.key)
        injection_id = normal.get("injection_id")
        tx.execute(
            "INSERT INTO audit (seq, at, injection_id, entry, prev_hash, hash, scheme) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        tx.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, digest),
        )
        if self._anchor is not None:
            tx.after_commit(lambda: self._note(seq, digest))
        return AuditEntry(seq, at, normal, prev_hash, digest)

    def _note(self, seq: int, digest: str) -> None:
        """Anchor a committed head unless a newer one was noted already."""
        with self._noted_lock:
            if seq > self._noted and self._anchor is not None:
                self._noted = seq
                self._anchor.note(seq, digest)

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
        clauses: list[str] = ["seq > %s"]
        params: list[str | float | int | None] = [after_seq]
        if injection_id is not None:
            clauses.append("injection_id = %s")
            params.append(injection_id)
        if since is not None:
            clauses.append("at >= %s")
            params.append(since)
        params.append(None if limit is None else max(limit, 0))  # LIMIT NULL: no limit
        entries: list[AuditEntry] = []
        total = 0
        with self._db.read() as conn:
            # A server-side cursor: a page stops at max_bytes without first fetching every
            # row the query matches.
            rows = conn.cursor(name="audit_entries").execute(
                "SELECT seq, at, entry, prev_hash, hash FROM audit "  # type: ignore[arg-type]
                f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT %s",
                params,
            )
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
            head = conn.execute(_HEAD).fetchone()
            rows = conn.cursor(name="audit_verify").execute(
                "SELECT seq, at, entry, prev_hash, hash, injection_id, scheme FROM audit "
                "ORDER BY seq"
            )
            verdict = verify_chain((AuditRow(*row) for row in rows), head, key)
            rows.close()
            if key is None or not verdict.ok:
                return verdict

            def hash_at(seq: int) -> str | None:
                row = conn.execute("SELECT hash FROM audit WHERE seq = %s", (seq,)).fetchone()
                return None if row is None else str(row[0])

            check = check_anchor(key, size, hash_at, verdict.entries)
        return anchored_verdict(verdict, check, key)

    def close(self) -> None:
        """Anchor the last head; later appends are no longer anchored."""
        if self._anchor is not None:
            self._anchor.close()

    def _stored_head(self) -> tuple[int, str] | None:
        with self._db.read() as conn:
            row = conn.execute(_HEAD).fetchone()
        return (int(row[0]), str(row[1])) if row else None
