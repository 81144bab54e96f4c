"""Guard readings and baseline samples on PostgreSQL (the `ReadingRepository`).

Both are telemetry: committed without waiting for the WAL flush (see
`faultplane.store.postgres_db`), since losing the last few on a database crash costs
nothing an operator was told.
"""

from __future__ import annotations

import json

import psycopg

from faultplane.store.base import BaselineSample, StoredReading, UnknownInjection
from faultplane.store.postgres_db import PostgresDb
from faultplane.store.sqlite_db import dumps_body


class PostgresReadings:
    """Rows of `slo_readings` (per injection) and `baseline_samples` (per SLO)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def add(self, injection_id: str, reading: StoredReading) -> None:
        body = dumps_body(reading.body, "reading")
        with self._db.write(durable=False) as tx:
            try:
                tx.execute(
                    "INSERT INTO slo_readings (injection_id, at, body) VALUES (%s, %s, %s)",
                    (injection_id, reading.at, body),
                )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise UnknownInjection(f"injection {injection_id} was never saved") from exc

    def load(self, injection_id: str) -> list[StoredReading]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT at, body FROM slo_readings WHERE injection_id = %s ORDER BY at, id",
                (injection_id,),
            ).fetchall()
        return [StoredReading(at, json.loads(body)) for at, body in rows]

    def add_baseline(self, slo: str, sample: BaselineSample) -> None:
        with self._db.write(durable=False) as tx:
            tx.execute(
                "INSERT INTO baseline_samples (slo, at, value, error) VALUES (%s, %s, %s, %s)",
                (slo, sample.at, sample.value, sample.error),
            )

    def baseline(self, slo: str, since: float) -> list[BaselineSample]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT at, value, error FROM baseline_samples WHERE slo = %s AND at >= %s "
                "ORDER BY at, id",
                (slo, since),
            ).fetchall()
        return [BaselineSample(*row) for row in rows]

    def prune_baseline(self, before: float) -> int:
        with self._db.write(durable=False) as tx:
            return tx.execute("DELETE FROM baseline_samples WHERE at < %s", (before,)).rowcount
