"""`PostgresStore`: the `Store` protocol on a PostgreSQL database (`--store postgresql://`).

The pool, migrations and transaction discipline live in `faultplane.store.postgres_db`;
each repository is one `faultplane.store.postgres_*` module over that shared pool, as the
SQLite store's are over its connection, and this class only opens it and builds them.
Several processes may share one database: every guarantee of the `Store` protocol holds
across them (the audit chain is appended under a database lock, transitions are unique on
(injection_id, seq) in the database itself).

Needs the `postgresql` extra (psycopg 3 and psycopg-pool).
"""

from __future__ import annotations

from typing import Self

from faultplane.store.audit_key import AuditKey
from faultplane.store.postgres_audit import PostgresAudit
from faultplane.store.postgres_db import DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, PostgresDb
from faultplane.store.postgres_faults import PostgresFaults
from faultplane.store.postgres_injections import PostgresInjections
from faultplane.store.postgres_leases import PostgresLeases
from faultplane.store.postgres_readings import PostgresReadings
from faultplane.store.postgres_replicas import PostgresReplicas
from faultplane.store.postgres_settings import PostgresSettings
from faultplane.store.postgres_tokens import PostgresTokens
from faultplane.store.scheduling_rows import PostgresScheduling

__all__ = ["PostgresStore"]


class PostgresStore:
    """The `Store` protocol on one PostgreSQL database; migrations are applied at open.

    `url` is a libpq connection string (`postgresql://user:password@host:port/dbname`).
    An unreachable database raises StoreError naming it (without its password).
    `audit_key` and `anchor_writes` as for `SqliteStore`.
    """

    def __init__(
        self,
        url: str,
        *,
        audit_key: AuditKey | None = None,
        anchor_writes: bool = True,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._db = PostgresDb(url, pool_size=pool_size, connect_timeout=connect_timeout)
        try:
            self.audit = PostgresAudit(self._db, audit_key, anchor_writes=anchor_writes)
        except BaseException:
            self._db.close()
            raise
        self.injections = PostgresInjections(self._db, self.audit)
        self.readings = PostgresReadings(self._db)
        self.tokens = PostgresTokens(self._db)
        self.settings = PostgresSettings(self._db)
        self.scheduling = PostgresScheduling(self._db)
        self.replicas = PostgresReplicas(self._db)  # not in `Store`: faultplane.replicas
        self.faults = PostgresFaults(self._db)  # likewise
        self.leases = PostgresLeases(self._db)  # likewise

    @property
    def path(self) -> str:
        """Where the store is, for logs: the URL without its password (named like
        `SqliteStore.path` so a log line names either store)."""
        return self._db.where

    @property
    def url(self) -> str:
        """The connection string (with its password: never log it; `path` is for logs),
        for a connection of its own, such as a LISTEN (faultplane.store.postgres_listen)."""
        return self._db.url

    @property
    def audit_key(self) -> AuditKey | None:
        """The key the audit chain is kept with, if any."""
        return self.audit.key

    @property
    def migrations_applied(self) -> int:
        """How many schema migrations opening the database applied (0: it was current)."""
        return self._db.migrations_applied

    def close(self) -> None:
        """Anchor the last audit head, then close the pool; closing twice is fine."""
        self.audit.close()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
