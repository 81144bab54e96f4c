"""Persistence: the `Store` interface and its embedded SQLite implementation.

Callers depend on `Store` (faultplane.store.base); `SqliteStore` is the default behind
`--db PATH`. A networked database can replace it by implementing the same protocol.
"""

from faultplane.store.base import (
    AuditEntry,
    AuditVerdict,
    BaselineSample,
    Conflict,
    SchemaVersionError,
    SloReading,
    Store,
    StoredInjection,
    StoredToken,
    StoredTransition,
    StoreError,
    UnknownInjection,
)
from faultplane.store.sqlite import SqliteStore, default_db_path

__all__ = [
    "AuditEntry",
    "AuditVerdict",
    "BaselineSample",
    "Conflict",
    "SchemaVersionError",
    "SloReading",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoredInjection",
    "StoredToken",
    "StoredTransition",
    "UnknownInjection",
    "default_db_path",
]
