"""Settings on PostgreSQL (the `SettingRepository`): one JSON document per key."""

from __future__ import annotations

import json
import time

from faultplane.store.base import JsonDict
from faultplane.store.postgres_db import PostgresDb
from faultplane.store.sqlite_db import dumps_body

SETTINGS_CHANNEL = "faultplane_settings"


class PostgresSettings:
    """Rows of `settings`; written durably, since the freeze is one of them."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def get(self, key: str) -> JsonDict | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set(self, key: str, value: JsonDict | None) -> None:
        """Store a setting; None deletes it (so get returns None again)."""
        text = None if value is None else dumps_body(value, "setting")
        with self._db.write() as tx:
            if text is None:
                tx.execute("DELETE FROM settings WHERE key = %s", (key,))
                tx.execute("SELECT pg_notify(%s, %s)", (SETTINGS_CHANNEL, key))
                return
            tx.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, text, time.time()),
            )
            # Replicas re-read a changed setting (the freeze) when told, after this commits.
            tx.execute("SELECT pg_notify(%s, %s)", (SETTINGS_CHANNEL, key))
