"""Settings on SQLite (the `SettingRepository`): one JSON document per key."""

from __future__ import annotations

import json
import time

from faultplane.store.base import JsonDict
from faultplane.store.sqlite_db import SqliteDb, dumps_body


class SqliteSettings:
    """Rows of `settings`; written durably, since the freeze is one of them."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    def get(self, key: str) -> JsonDict | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set(self, key: str, value: JsonDict | None) -> None:
        """Store a setting; None deletes it (so get returns None again)."""
        with self._db.write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
                return
            conn.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, dumps_body(value, "setting"), time.time()),
            )
