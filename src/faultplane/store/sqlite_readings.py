"""Guard readings and baseline samples on SQLite (the `ReadingRepository`).

Both are telemetry: written with synchronous=NORMAL (see `faultplane.store.sqlite_db`),
since losing the last few on power loss costs nothing an operator was told.
"""

from __future__ import annotations

import json
import sqlite3

from faultplane.store.base import BaselineSample, StoredReading, UnknownInjection
from faultplane.store.sqlite_db import SqliteDb, dumps_body


class SqliteReadings:
    """Rows of `slo_readings` (per injection) and `baseline_samples` (per SLO)."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    def add(self, injection_id: str, reading: StoredReading) -> None:
        with self._db.write(durable=False) as conn:
            try:
                conn.execute(
                    "INSERT INTO slo_readings (injection_id, at, body) VALUES (?, ?, ?)",
                    (injection_id, reading.at, dumps_body(reading.body, "reading")),
                )
            except sqlite3.IntegrityError as exc:
                raise UnknownInjection(f"injection {injection_id} was never saved") from exc

    def load(self, injection_id: str) -> list[StoredReading]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT at, body FROM slo_readings WHERE injection_id = ? ORDER BY at, id",
                (injection_id,),
            ).fetchall()
        return [StoredReading(at, json.loads(body)) for at, body in rows]

    def add_baseline(self, slo: str, sample: BaselineSample) -> None:
        with self._db.write(durable=False) as conn:
            conn.execute(
                "INSERT INTO baseline_samples (slo, at, value, error) VALUES (?, ?, ?, ?)",
                (slo, sample.at, sample.value, sample.error),
            )

    def baseline(self, slo: str, since: float) -> list[BaselineSample]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT at, value, error FROM baseline_samples WHERE slo = ? AND at >= ? "
                "ORDER BY at, id",
                (slo, since),
            ).fetchall()
        return [BaselineSample(*row) for row in rows]

    def prune_baseline(self, before: float) -> int:
        with self._db.write(durable=False) as conn:
            return conn.execute("DELETE FROM baseline_samples WHERE at < ?", (before,)).rowcount
