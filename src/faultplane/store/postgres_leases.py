"""Injection leases on PostgreSQL: exactly one replica owns each live injection.

A lease row names the owner, a fencing token and an expiry. The owner renews it; a
replica may claim it once it has expired (the owner died or lost the database), and a
change of owner increments the token. Every write of an injection by a replica checks,
in the write's own transaction and under the row's lock, that the lease is still its
own with the token it holds (`check`): a replica that lost its lease cannot write a
transition after the new owner took over (the write raises LeaseLost and changes
nothing). A brand-new injection's first write creates its lease (token 1) in that same
transaction, so no other replica ever sees it live without an owner.

Stop requests: an abort asked on a replica that does not own the injection is stored
here (and announced) for the owner to carry out.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import psycopg

from faultplane.store.base import StoreError
from faultplane.store.postgres_db import PostgresDb, Tx
from faultplane.store.postgres_schema import ADMISSION_LOCK
from faultplane.store.replica_rows import LeaseLost

STOP_CHANNEL = "faultplane_stop"


def check(tx: Tx, injection_id: str, owner: str, token: int | None, ttl: float) -> int:
    """In a write transaction of the injection: its lease is `owner`'s with `token`
    (None: a new injection, whose lease this creates if absent); the token. Raises
    LeaseLost otherwise."""
    row = tx.execute(
        "SELECT owner, token FROM injection_leases WHERE injection_id = %s FOR UPDATE",
        (injection_id,),
    ).fetchone()
    if row is None:
        if token is not None:
            raise LeaseLost(f"injection {injection_id}: its lease is gone")
        tx.execute(
            "INSERT INTO injection_leases (injection_id, owner, token, expires_at) "
            "VALUES (%s, %s, 1, %s)",
            (injection_id, owner, time.time() + ttl),
        )
        return 1
    held_by, held_token = row[0], int(row[1])
    if held_by != owner or (token is not None and held_token != token):
        raise LeaseLost(
            f"injection {injection_id} is owned by replica {held_by} (token {held_token}), "
            f"not {owner} (token {token})"
        )
    return held_token


class PostgresLeases:
    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def claim(self, injection_id: str, owner: str, ttl: float) -> int | None:
        """Take (or keep) the injection's lease if it is free, expired or already
        `owner`'s; the token (incremented on a change of owner), None if another holds it."""
        now = time.time()
        with self._db.write() as tx:
            row = tx.execute(
                "INSERT INTO injection_leases (injection_id, owner, token, expires_at) "
                "VALUES (%s, %s, 1, %s) ON CONFLICT (injection_id) DO UPDATE SET "
                "token = injection_leases.token + CASE WHEN injection_leases.owner = "
                "excluded.owner THEN 0 ELSE 1 END, owner = excluded.owner, "
                "expires_at = excluded.expires_at WHERE injection_leases.owner = "
                "excluded.owner OR injection_leases.expires_at < %s RETURNING token",
                (injection_id, owner, now + ttl, now),
            ).fetchone()
        return int(row[0]) if row else None

    def renew(self, owner: str, held: dict[str, int], ttl: float) -> set[str]:
        """Extend every lease `owner` still holds with the token it knows; the ids
        renewed (the others were taken over)."""
        if not held:
            return set()
        with self._db.write(durable=False) as tx:
            rows = tx.execute(
                "UPDATE injection_leases l SET expires_at = %s FROM unnest(%s::text[], "
                "%s::bigint[]) AS h(id, token) WHERE l.injection_id = h.id AND l.owner = %s "
                "AND l.token = h.token RETURNING l.injection_id",
                (time.time() + ttl, list(held), list(held.values()), owner),
            ).fetchall()
        return {row[0] for row in rows}

    def release_finished(self, owner: str, live_states: Sequence[str]) -> set[str]:
        """Drop `owner`'s leases of injections whose end is in the store (only then: an
        end still being written must not look like an orphan); the ids released."""
        with self._db.write(durable=False) as tx:
            rows = tx.execute(
                "DELETE FROM injection_leases l USING injections i WHERE l.owner = %s AND "
                "i.id = l.injection_id AND NOT (i.state = ANY(%s::text[])) "
                "RETURNING l.injection_id",
                (owner, list(live_states)),
            ).fetchall()
            tx.execute(
                "DELETE FROM injection_stop_requests r USING injections i WHERE "
                "i.id = r.injection_id AND NOT (i.state = ANY(%s::text[]))",
                (list(live_states),),
            )
        return {row[0] for row in rows}

    def orphans(self, live_states: Sequence[str]) -> list[str]:
        """Live injections (not queued) whose lease expired or that have none."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT i.id FROM injections i LEFT JOIN injection_leases l ON "
                "l.injection_id = i.id WHERE i.state = ANY(%s::text[]) AND "
                "(l.injection_id IS NULL OR l.expires_at < %s) ORDER BY i.created_at",
                (list(live_states), time.time()),
            ).fetchall()
        return [row[0] for row in rows]

    def owner(self, injection_id: str) -> str | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT owner FROM injection_leases WHERE injection_id = %s AND expires_at > %s",
                (injection_id, time.time()),
            ).fetchone()
        return row[0] if row else None

    def request_stop(self, injection_id: str, reason: str, principal: str) -> None:
        """Ask the injection's owner to abort it (stored, and announced)."""
        with self._db.write() as tx:
            tx.execute(
                "INSERT INTO injection_stop_requests (injection_id, reason, principal, at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (injection_id) DO NOTHING",
                (injection_id, reason, principal, time.time()),
            )
            tx.execute("SELECT pg_notify(%s, %s)", (STOP_CHANNEL, injection_id))

    def stop_requests(self, injection_ids: Collection[str]) -> list[tuple[str, str, str]]:
        """The stop requests for these injections: (id, reason, principal)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT injection_id, reason, principal FROM injection_stop_requests "
                "WHERE injection_id = ANY(%s::text[])",
                (list(injection_ids),),
            ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]


class AdmissionLock:
    """The replicas' admission lock: a session-level advisory lock on a connection of its
    own, held from the admission decision until the admitted injection's first record
    has committed, so the next admission on any replica sees it. A lost connection
    releases the lock on the server's side; the next acquire reconnects."""

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = connect_timeout
        self._conn: psycopg.Connection | None = None

    def acquire(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=max(1, round(self._timeout))
                )
            self._conn.execute("SELECT pg_advisory_lock(%s)", (ADMISSION_LOCK,))
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot take the admission lock: {exc}") from exc

    def release(self) -> None:
        try:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (ADMISSION_LOCK,))
        except psycopg.Error:
            self.close()  # the session's end releases it

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
