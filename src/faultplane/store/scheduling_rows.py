"""The scheduler's documents (blackouts, recurring schedules) on either backend.

One row per (kind, id) holding a JSON document: the scheduler owns the documents' shape
(faultplane.lifecycle.calendars, faultplane.lifecycle.schedules), the store only keeps
them durably. The SQL is the same on SQLite and PostgreSQL but for the placeholder, so
one class serves both (`SqliteScheduling`, `PostgresScheduling` only name the style).
"""

from __future__ import annotations

import json
import time
from typing import Any

from faultplane.store.base import JsonDict
from faultplane.store.sqlite_db import dumps_body


class SchedulingRows:
    """Rows of `scheduling_items`; written durably (they are governance records)."""

    placeholder = "?"

    def __init__(self, db: Any) -> None:
        self._db = db  # SqliteDb or PostgresDb: read() and write() transactions

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def put(self, kind: str, item_id: str, body: JsonDict) -> None:
        """Create or replace one document."""
        text = dumps_body(body, kind)
        with self._db.write() as tx:
            tx.execute(
                self._sql(
                    "INSERT INTO scheduling_items (kind, id, body, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (kind, id) DO UPDATE SET "
                    "body = excluded.body, updated_at = excluded.updated_at"
                ),
                (kind, item_id, text, time.time()),
            )

    def get(self, kind: str, item_id: str) -> JsonDict | None:
        with self._db.read() as conn:
            row = conn.execute(
                self._sql("SELECT body FROM scheduling_items WHERE kind = ? AND id = ?"),
                (kind, item_id),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> list[tuple[str, JsonDict]]:
        """Every document of a kind, by id."""
        with self._db.read() as conn:
            rows = conn.execute(
                self._sql("SELECT id, body FROM scheduling_items WHERE kind = ? ORDER BY id"),
                (kind,),
            ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def delete(self, kind: str, item_id: str) -> bool:
        """True if this call deleted it; False if there was none."""
        with self._db.write() as tx:
            cursor = tx.execute(
                self._sql("DELETE FROM scheduling_items WHERE kind = ? AND id = ?"),
                (kind, item_id),
            )
            return bool(cursor.rowcount)


class SqliteScheduling(SchedulingRows):
    placeholder = "?"


class PostgresScheduling(SchedulingRows):
    placeholder = "%s"
