"""Persistence: the `Store` interface and its embedded SQLite implementation.

Callers depend on `Store` (faultplane.store.repositories): one repository each for
injections, readings, the audit chain, tokens and settings, written with the records of
faultplane.store.base. `SqliteStore` is the default behind `--db PATH`; `PostgresStore`
(faultplane.store.postgres, `--store postgresql://...`) implements the same protocols on a
database several processes share, and is opened through `open_postgres_store`, because its
driver is the optional `postgresql` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faultplane.store.base import (
    AuditEntry,
    AuditVerdict,
    BaselineSample,
    Conflict,
    InjectionRecord,
    NewToken,
    SchemaVersionError,
    StoredInjection,
    StoredReading,
    StoredToken,
    StoreError,
    TransitionRecord,
    UnknownInjection,
)
from faultplane.store.repositories import (
    AuditRepository,
    InjectionRepository,
    ReadingRepository,
    SchedulingRepository,
    SettingRepository,
    Store,
    TokenRepository,
)
from faultplane.store.sqlite import SqliteStore, default_db_path

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore


def open_postgres_store(url: str, **options: Any) -> PostgresStore:
    """`PostgresStore(url, **options)`; a StoreError saying what to install if psycopg is
    missing (the SQLite store never needs it)."""
    try:
        from faultplane.store.postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"the PostgreSQL store needs psycopg ({exc.name} is missing): "
            "pip install 'faultplane[postgresql]'"
        ) from exc
    return PostgresStore(url, **options)


__all__ = [
    "AuditEntry",
    "AuditRepository",
    "AuditVerdict",
    "BaselineSample",
    "Conflict",
    "InjectionRecord",
    "InjectionRepository",
    "NewToken",
    "ReadingRepository",
    "SchedulingRepository",
    "SchemaVersionError",
    "SettingRepository",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoredInjection",
    "StoredReading",
    "StoredToken",
    "TokenRepository",
    "TransitionRecord",
    "UnknownInjection",
    "default_db_path",
    "open_postgres_store",
]
