"""`SqliteStore`: the embedded default store, one SQLite file in WAL mode (`--db PATH`).

The connection, its pragmas and the transaction discipline (BEGIN IMMEDIATE writes, FULL
fsync for governance records, NORMAL for telemetry) live in `faultplane.store.sqlite_db`;
each repository of the `Store` protocol is one `faultplane.store.sqlite_*` module over
that shared connection, and this class only opens it and builds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from faultplane.store.audit_key import AuditKey
from faultplane.store.scheduling_rows import SqliteScheduling
from faultplane.store.sqlite_audit import SqliteAudit
from faultplane.store.sqlite_db import SqliteDb, default_db_path
from faultplane.store.sqlite_injections import SqliteInjections
from faultplane.store.sqlite_readings import SqliteReadings
from faultplane.store.sqlite_settings import SqliteSettings
from faultplane.store.sqlite_tokens import SqliteTokens

__all__ = ["SqliteStore", "default_db_path"]


class SqliteStore:
    """The `Store` protocol on one SQLite file; schema migrations are applied at open.

    `SqliteStore(path, audit_key=key)` keys the audit chain and anchors its head
    (faultplane.store.sqlite_audit); `anchor_writes=False` for a reader that must never
    write the anchor file (offline `faultplane audit verify`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 30.0,
        audit_key: AuditKey | None = None,
        anchor_writes: bool = True,
    ) -> None:
        self._db = SqliteDb(path, busy_timeout=busy_timeout)
        try:
            self.audit = SqliteAudit(self._db, audit_key, anchor_writes=anchor_writes)
        except BaseException:
            self._db.close()
            raise
        self.injections = SqliteInjections(self._db, self.audit)
        self.readings = SqliteReadings(self._db)
        self.tokens = SqliteTokens(self._db)
        self.settings = SqliteSettings(self._db)
        self.scheduling = SqliteScheduling(self._db)

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def audit_key(self) -> AuditKey | None:
        """The key the audit chain is kept with, if any."""
        return self.audit.key

    @property
    def migrations_applied(self) -> int:
        """How many schema migrations opening the file applied (0: it was current)."""
        return self._db.migrations_applied

    def close(self) -> None:
        """Anchor the last audit head, then close the database; closing twice is fine."""
        self.audit.close()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
