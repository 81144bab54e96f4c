"""`SqliteStore`: the embedded default store, one SQLite file in WAL mode (`--db PATH`).

The connection, its pragmas and the transaction discipline (BEGIN IMMEDIATE writes, FULL
fsync for governance records, NORMAL for telemetry) live in `faultplane.store.sqlite_db`;
this module maps the `Store` protocol onto the schema in `faultplane.store.schema`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection

from faultplane.store.audit import GENESIS_HASH, canonical_json, seal_entry
from faultplane.store.base import (
    FINISHED_STATES,
    AuditEntry,
    AuditVerdict,
    BaselineSample,
    Conflict,
    JsonDict,
    SloReading,
    StoredInjection,
    StoredToken,
    StoredTransition,
    UnknownInjection,
)
from faultplane.store.sqlite_audit import KeyedAuditDb
from faultplane.store.sqlite_db import default_db_path, dumps_body

__all__ = ["SqliteStore", "default_db_path"]


class SqliteStore(KeyedAuditDb):
    """The `Store` protocol on one SQLite file; schema migrations are applied at open.

    `SqliteStore(path, audit_key=key)` keys the audit chain (faultplane.store.sqlite_audit).
    """

    # -- injections and transitions ---------------------------------------------------------

    def save_injection(
        self, injection_id: str, state: str, service: str, created_at: float, body: JsonDict
    ) -> None:
        with self._write() as conn:
            self._upsert_injection(conn, injection_id, state, service, created_at, body)

    def append_transition(self, injection_id: str, seq: int, at: float, body: JsonDict) -> bool:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM injections WHERE id = ?", (injection_id,)).fetchone():
                return self._insert_transition(conn, injection_id, seq, at, body)
            raise UnknownInjection(
                f"injection {injection_id} was never saved; save it first or use record_transition"
            )

    def record_transition(
        self,
        injection_id: str,
        seq: int,
        at: float,
        transition_body: JsonDict,
        state: str,
        service: str,
        created_at: float,
        injection_body: JsonDict,
        audit: JsonDict | None,
    ) -> bool:
        with self._write() as conn:
            if not self._insert_transition(conn, injection_id, seq, at, transition_body):
                return False
            self._upsert_injection(conn, injection_id, state, service, created_at, injection_body)
            if audit is not None:
                self._append_audit(conn, audit)
            return True

    def load_injections(self, states: Collection[str] | None = None) -> list[StoredInjection]:
        where = ""
        params: tuple[str, ...] = ()
        if states is not None:
            params = (states,) if isinstance(states, str) else tuple(states)  # "armed" is one
            if not params:
                return []
            where = f"WHERE i.state IN ({','.join('?' * len(params))})"
        with self._read() as conn:
            rows = conn.execute(
                "SELECT i.id, i.state, i.service, i.created_at, i.body FROM injections i "
                f"{where} ORDER BY i.created_at, i.id",
                params,
            ).fetchall()
            history: dict[str, list[StoredTransition]] = {row[0]: [] for row in rows}
            for iid, seq, at, body in conn.execute(
                "SELECT t.injection_id, t.seq, t.at, t.body FROM transitions t "
                f"JOIN injections i ON i.id = t.injection_id {where} "
                "ORDER BY t.injection_id, t.seq",
                params,
            ):
                history[iid].append(StoredTransition(seq, at, json.loads(body)))
        return [
            StoredInjection(iid, state, service, created_at, json.loads(body), tuple(history[iid]))
            for iid, state, service, created_at, body in rows
        ]

    def load_injection(self, injection_id: str) -> StoredInjection | None:
        with self._read() as conn:
            found = self._load_ids(conn, [injection_id])
        return found[0] if found else None

    def page_injections(
        self,
        states: Collection[str] | None,
        service: str | None,
        before: tuple[float, str] | None,
        limit: int,
        skip: Collection[str] = (),
    ) -> list[StoredInjection]:
        """Newest first (created_at, then id, descending), strictly older than `before`,
        at most `limit`, leaving out the ids in `skip` (those the caller holds itself).
        The scan reads only the listing index; bodies are read for the page alone."""
        clauses: list[str] = []
        params: list[str | float] = []
        if states is not None:
            if not states:
                return []
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params += list(states)
        if service:
            clauses.append("service = ?")
            params.append(service)
        if before is not None:
            clauses.append("(created_at, id) < (?, ?)")
            params += [before[0], before[1]]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        ids: list[str] = []
        with self._read() as conn:
            scan = conn.execute(
                f"SELECT id FROM injections INDEXED BY injections_listing {where} "
                "ORDER BY created_at DESC, id DESC",
                params,
            )
            for (injection_id,) in scan:  # row by row: stops once the page is full
                if injection_id not in skip:
                    ids.append(injection_id)
                    if len(ids) >= limit:
                        break
            return self._load_ids(conn, ids) if ids else []

    def _load_ids(self, conn: sqlite3.Connection, ids: list[str]) -> list[StoredInjection]:
        """These injections with their transitions, in the order of `ids`."""
        marks = ",".join("?" * len(ids))
        rows = {
            row[0]: row
            for row in conn.execute(
                "SELECT id, state, service, created_at, body FROM injections "
                f"WHERE id IN ({marks})",
                ids,
            )
        }
        history: dict[str, list[StoredTransition]] = {iid: [] for iid in rows}
        for iid, seq, at, body in conn.execute(
            "SELECT injection_id, seq, at, body FROM transitions "
            f"WHERE injection_id IN ({marks}) ORDER BY injection_id, seq",
            ids,
        ):
            history[iid].append(StoredTransition(seq, at, json.loads(body)))
        return [
            StoredInjection(iid, state, service, created_at, json.loads(body), tuple(history[iid]))
            for iid, state, service, created_at, body in (rows[i] for i in ids if i in rows)
        ]

    def prune_injections(
        self, before: float, states: Collection[str] = FINISHED_STATES, limit: int = 500
    ) -> int:
        """Delete up to `limit` injections in `states` whose record last changed before
        `before` (for a finished one: when it finished), with their transitions and SLO
        readings, in one transaction; how many went. Call again while it returns `limit`:
        small batches keep the write lock short. The audit is never touched."""
        if not states:
            return 0
        marks = ",".join("?" * len(states))
        with self._write(durable=False) as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM injections WHERE state IN ({marks}) AND updated_at < ? "
                    "LIMIT ?",
                    [*states, before, limit],
                )
            ]
            if not ids:
                return 0
            chosen = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM slo_readings WHERE injection_id IN ({chosen})", ids)
            conn.execute(f"DELETE FROM transitions WHERE injection_id IN ({chosen})", ids)
            conn.execute(f"DELETE FROM injections WHERE id IN ({chosen})", ids)
            return len(ids)

    def _upsert_injection(
        self,
        conn: sqlite3.Connection,
        injection_id: str,
        state: str,
        service: str,
        created_at: float,
        body: JsonDict,
    ) -> None:
        conn.execute(
            "INSERT INTO injections (id, state, service, created_at, updated_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
            "service = excluded.service, created_at = excluded.created_at, "
            "updated_at = excluded.updated_at, body = excluded.body",
            (injection_id, state, service, created_at, time.time(), dumps_body(body, "body")),
        )

    def _insert_transition(
        self, conn: sqlite3.Connection, injection_id: str, seq: int, at: float, body: JsonDict
    ) -> bool:
        cursor = conn.execute(
            "INSERT INTO transitions (injection_id, seq, at, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (injection_id, seq) DO NOTHING",
            (injection_id, seq, at, dumps_body(body, "transition body")),
        )
        return cursor.rowcount == 1

    # -- audit chain ------------------------------------------------------------------------

    def append_audit(self, entry: JsonDict) -> AuditEntry:
        with self._write() as conn:
            return self._append_audit(conn, entry)

    def _append_audit(self, conn: sqlite3.Connection, entry: JsonDict) -> AuditEntry:
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
        scheme, digest = seal_entry(prev_hash, seq, at, normal, self.audit_key)
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
        self._appended_head = (seq, digest)  # anchored once the transaction commits
        return AuditEntry(seq, at, normal, prev_hash, digest)

    def audit_entries(
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
        with self._read() as conn:
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

    def verify_audit(self) -> AuditVerdict:
        """The chain; with the audit key, also the keyed hashes and the anchored heads."""
        return self._verify_keyed()

    # -- tokens -----------------------------------------------------------------------------

    def add_token(
        self, token_id: str, principal: str, role: str, token_hash: str, created_at: float
    ) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO tokens (id, principal, role, token_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (token_id, principal, role, token_hash, created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"token {token_id} (or a token with that hash) exists") from exc

    def find_token(self, token_hash: str) -> StoredToken | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT id, principal, role, created_at, revoked_at FROM tokens "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
        return StoredToken(*row) if row else None

    def list_tokens(self) -> list[StoredToken]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, principal, role, created_at, revoked_at FROM tokens "
                "ORDER BY created_at, id"
            ).fetchall()
        return [StoredToken(*row) for row in rows]

    def revoke_token(self, token_id: str) -> bool:
        """True if this call revoked it; False if unknown or already revoked."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            return cursor.rowcount == 1

    # -- SLO data ---------------------------------------------------------------------------

    def add_slo_reading(self, injection_id: str, at: float, body: JsonDict) -> None:
        with self._write(durable=False) as conn:
            try:
                conn.execute(
                    "INSERT INTO slo_readings (injection_id, at, body) VALUES (?, ?, ?)",
                    (injection_id, at, dumps_body(body, "reading")),
                )
            except sqlite3.IntegrityError as exc:
                raise UnknownInjection(f"injection {injection_id} was never saved") from exc

    def slo_readings(self, injection_id: str) -> list[SloReading]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT at, body FROM slo_readings WHERE injection_id = ? ORDER BY at, id",
                (injection_id,),
            ).fetchall()
        return [SloReading(at, json.loads(body)) for at, body in rows]

    def add_baseline_sample(
        self, slo: str, at: float, value: float | None, error: str = ""
    ) -> None:
        with self._write(durable=False) as conn:
            conn.execute(
                "INSERT INTO baseline_samples (slo, at, value, error) VALUES (?, ?, ?, ?)",
                (slo, at, value, error),
            )

    def baseline_samples(self, slo: str, since: float) -> list[BaselineSample]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT at, value, error FROM baseline_samples WHERE slo = ? AND at >= ? "
                "ORDER BY at, id",
                (slo, since),
            ).fetchall()
        return [BaselineSample(*row) for row in rows]

    def prune_baseline(self, before: float) -> int:
        with self._write(durable=False) as conn:
            return conn.execute("DELETE FROM baseline_samples WHERE at < ?", (before,)).rowcount

    # -- settings ---------------------------------------------------------------------------

    def set_setting(self, key: str, value: JsonDict | None) -> None:
        """Store a setting; None deletes it (so get_setting returns None again)."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
                return
            conn.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, dumps_body(value, "setting"), time.time()),
            )

    def get_setting(self, key: str) -> JsonDict | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None
