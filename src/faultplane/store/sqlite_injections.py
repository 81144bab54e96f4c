"""Injections and their transitions on SQLite (the `InjectionRepository`).

A transition is recorded with the injection's new record and its audit entry in one
transaction, so the audit is appended through `SqliteAudit.append_in` on the same
connection rather than by a second write.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable

from faultplane.store.base import (
    FINISHED_STATES,
    InjectionRecord,
    JsonDict,
    StoredInjection,
    TransitionRecord,
)
from faultplane.store.sqlite_audit import SqliteAudit
from faultplane.store.sqlite_db import SqliteDb, dumps_body


class SqliteInjections:
    """Rows of `injections` and `transitions`; audit entries go to `audit`'s chain."""

    def __init__(self, db: SqliteDb, audit: SqliteAudit) -> None:
        self._db = db
        self._audit = audit

    def save(self, injection: InjectionRecord) -> None:
        with self._db.write() as conn:
            _upsert(conn, injection)

    def record_transition(
        self, transition: TransitionRecord, injection: InjectionRecord, audit: JsonDict | None
    ) -> bool:
        with self._db.write() as conn:
            if not _insert_transition(conn, transition):
                return False
            _upsert(conn, injection)
            if audit is not None:
                self._audit.append_in(conn, audit)
            return True

    def get(self, injection_id: str) -> StoredInjection | None:
        with self._db.read() as conn:
            found = _load_ids(conn, [injection_id])
        return found[0] if found else None

    def load(self, states: Collection[str] | None = None) -> list[StoredInjection]:
        where = ""
        params: tuple[str, ...] = ()
        if states is not None:
            params = (states,) if isinstance(states, str) else tuple(states)  # "armed" is one
            if not params:
                return []
            where = f"WHERE i.state IN ({','.join('?' * len(params))})"
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT i.id, i.state, i.service, i.created_at, i.body FROM injections i "
                f"{where} ORDER BY i.created_at, i.id",
                params,
            ).fetchall()
            history = _history(
                conn.execute(
                    "SELECT t.injection_id, t.seq, t.at, t.body FROM transitions t "
                    f"JOIN injections i ON i.id = t.injection_id {where} "
                    "ORDER BY t.injection_id, t.seq",
                    params,
                ),
                [row[0] for row in rows],
            )
        return [_stored(row, history) for row in rows]

    def page(
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
        with self._db.read() as conn:
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
            return _load_ids(conn, ids) if ids else []

    def prune(
        self, before: float, states: Collection[str] = FINISHED_STATES, limit: int = 500
    ) -> int:
        """Delete up to `limit` injections in `states` whose record last changed before
        `before` (for a finished one: when it finished), with their transitions and SLO
        readings, in one transaction; how many went. Call again while it returns `limit`:
        small batches keep the write lock short. The audit is never touched."""
        if not states:
            return 0
        marks = ",".join("?" * len(states))
        with self._db.write(durable=False) as conn:
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


Row = tuple[str, str, str, float, str]


def _load_ids(conn: sqlite3.Connection, ids: list[str]) -> list[StoredInjection]:
    """These injections with their transitions, in the order of `ids`."""
    marks = ",".join("?" * len(ids))
    rows: dict[str, Row] = {
        row[0]: row
        for row in conn.execute(
            f"SELECT id, state, service, created_at, body FROM injections WHERE id IN ({marks})",
            ids,
        )
    }
    history = _history(
        conn.execute(
            "SELECT injection_id, seq, at, body FROM transitions "
            f"WHERE injection_id IN ({marks}) ORDER BY injection_id, seq",
            ids,
        ),
        rows,
    )
    return [_stored(rows[i], history) for i in ids if i in rows]


def _history(
    transitions: Iterable[tuple[str, int, float, str]], ids: Iterable[str]
) -> dict[str, list[TransitionRecord]]:
    """Each of `ids` with its transitions, from rows in seq order per injection."""
    history: dict[str, list[TransitionRecord]] = {iid: [] for iid in ids}
    for iid, seq, at, body in transitions:
        history[iid].append(TransitionRecord(iid, seq, at, json.loads(body)))
    return history


def _stored(row: Row, history: dict[str, list[TransitionRecord]]) -> StoredInjection:
    iid, state, service, created_at, body = row
    return StoredInjection(iid, state, service, created_at, json.loads(body), tuple(history[iid]))


def _upsert(conn: sqlite3.Connection, injection: InjectionRecord) -> None:
    conn.execute(
        "INSERT INTO injections (id, state, service, created_at, updated_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
        "service = excluded.service, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, body = excluded.body",
        (
            injection.id,
            injection.state,
            injection.service,
            injection.created_at,
            time.time(),
            dumps_body(injection.body, "body"),
        ),
    )


def _insert_transition(conn: sqlite3.Connection, transition: TransitionRecord) -> bool:
    """False if (injection_id, seq) is already there: the write is a replay."""
    cursor = conn.execute(
        "INSERT INTO transitions (injection_id, seq, at, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (injection_id, seq) DO NOTHING",
        (
            transition.injection_id,
            transition.seq,
            transition.at,
            dumps_body(transition.body, "transition body"),
        ),
    )
    return cursor.rowcount == 1
