"""Injections and their transitions on PostgreSQL (the `InjectionRepository`).

A transition is recorded with the injection's new record and its audit entry in one
transaction: the audit is appended through `PostgresAudit.append_in` on the same
connection. The transition goes in first with ON CONFLICT DO NOTHING on (injection_id,
seq): a second writer of the same step (a replay, or another process racing this one)
waits for the first to commit and then finds the row, so it writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from typing import Any

import psycopg

from faultplane.store.base import (
    FINISHED_STATES,
    InjectionRecord,
    JsonDict,
    StoredInjection,
    TransitionRecord,
)
from faultplane.store.postgres_audit import PostgresAudit
from faultplane.store.postgres_db import PostgresDb, Tx
from faultplane.store.postgres_leases import check
from faultplane.store.replica_rows import Fence
from faultplane.store.sqlite_db import dumps_body

TRANSITIONS_CHANNEL = "faultplane_transitions"
_COLUMNS = "id, state, service, created_at, body"  # a Row, in order


class PostgresInjections:
    """Rows of `injections` and `transitions`; audit entries go to `audit`'s chain."""

    def __init__(self, db: PostgresDb, audit: PostgresAudit) -> None:
        self._db = db
        self._audit = audit
        # Set by faultplane.replicas.ownership: every write checks the injection's lease.
        self.fence: Fence | None = None

    def save(self, injection: InjectionRecord) -> None:
        with self._db.write() as tx:
            self._fenced(tx, injection.id)
            _upsert(tx, injection)

    def record_transition(
        self, transition: TransitionRecord, injection: InjectionRecord, audit: JsonDict | None
    ) -> bool:
        with self._db.write() as tx:
            self._fenced(tx, injection.id)
            if not _insert_transition(tx, transition):
                return False
            _upsert(tx, injection)
            if audit is not None:
                self._audit.append_in(tx, audit)
            # Other replicas' watchers hear of it once it is committed (faultplane.replicas).
            writer = self.fence.owner if self.fence is not None else ""
            payload = f"{transition.injection_id} {transition.seq} {writer}"
            tx.execute("SELECT pg_notify(%s, %s)", (TRANSITIONS_CHANNEL, payload))
            return True

    def _fenced(self, tx: Tx, injection_id: str) -> None:
        """With replicas: only the injection's owner writes it (raises LeaseLost)."""
        fence = self.fence
        if fence is None:
            return
        token = check(tx, injection_id, fence.owner, fence.token(injection_id), fence.ttl)
        tx.after_commit(lambda: fence.granted(injection_id, token))

    def get(self, injection_id: str) -> StoredInjection | None:
        with self._db.read() as conn:
            found = _load_ids(conn, [injection_id])
        return found[0] if found else None

    def load(self, states: Collection[str] | None = None) -> list[StoredInjection]:
        where, params = "", []
        if states is not None:
            wanted = [states] if isinstance(states, str) else list(states)  # "armed" is one
            if not wanted:
                return []
            where, params = "WHERE state = ANY(%s)", [wanted]
        with self._db.read() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM injections {where} ORDER BY created_at, id",  # type: ignore[arg-type]
                    params,
                )
            ]
            return _load_ids(conn, ids) if ids else []

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
        The scan walks the listing index; bodies are read for the page alone."""
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            if not states:
                return []
            clauses.append("state = ANY(%s)")
            params.append(list(states))
        if service:
            clauses.append("service = %s")
            params.append(service)
        if before is not None:
            clauses.append("(created_at, id) < (%s, %s)")
            params += [before[0], before[1]]
        if skip:
            clauses.append("NOT (id = ANY(%s))")
            params.append(list(skip))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.read() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM injections {where} "  # type: ignore[arg-type]
                    "ORDER BY created_at DESC, id DESC LIMIT %s",
                    [*params, max(limit, 0)],
                )
            ]
            return _load_ids(conn, ids) if ids else []

    def prune(
        self, before: float, states: Collection[str] = FINISHED_STATES, limit: int = 500
    ) -> int:
        """Delete up to `limit` injections in `states` whose record last changed before
        `before`, with their transitions and SLO readings, in one transaction; how many
        went. Rows another process is pruning right now are skipped, not waited for. The
        audit is never touched."""
        if not states:
            return 0
        with self._db.write(durable=False) as tx:
            ids = [
                row[0]
                for row in tx.execute(
                    "SELECT id FROM injections WHERE state = ANY(%s) AND updated_at < %s "
                    "LIMIT %s FOR UPDATE SKIP LOCKED",
                    (list(states), before, limit),
                )
            ]
            if not ids:
                return 0
            tx.execute("DELETE FROM slo_readings WHERE injection_id = ANY(%s)", (ids,))
            tx.execute("DELETE FROM transitions WHERE injection_id = ANY(%s)", (ids,))
            tx.execute("DELETE FROM injections WHERE id = ANY(%s)", (ids,))
            return len(ids)


Row = tuple[str, str, str, float, str]


def _load_ids(conn: psycopg.Connection, ids: list[str]) -> list[StoredInjection]:
    """These injections with their transitions, in the order of `ids`."""
    rows: dict[str, Row] = {
        row[0]: row
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM injections WHERE id = ANY(%s)",  # type: ignore[arg-type]
            (ids,),
        )
    }
    history = _history(
        conn.execute(
            "SELECT injection_id, seq, at, body FROM transitions "
            "WHERE injection_id = ANY(%s) ORDER BY injection_id, seq",
            (ids,),
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


def _upsert(tx: Tx, injection: InjectionRecord) -> None:
    tx.execute(
        "INSERT INTO injections (id, state, service, created_at, updated_at, body) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "state = excluded.state, service = excluded.service, "
        "created_at = excluded.created_at, updated_at = excluded.updated_at, "
        "body = excluded.body",
        (
            injection.id,
            injection.state,
            injection.service,
            injection.created_at,
            time.time(),
            dumps_body(injection.body, "body"),
        ),
    )


def _insert_transition(tx: Tx, transition: TransitionRecord) -> bool:
    """False if (injection_id, seq) is already there: the write is a replay."""
    cursor = tx.execute(
        "INSERT INTO transitions (injection_id, seq, at, body) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (injection_id, seq) DO NOTHING",
        (
            transition.injection_id,
            transition.seq,
            transition.at,
            dumps_body(transition.body, "transition body"),
        ),
    )
    return cursor.rowcount == 1
