"""Persistence: the `Store` interface and its embedded SQLite implementation.

Callers depend on `Store` (faultplane.store.repositories): one repository each for
injections, readings, the audit chain, tokens and settings, written with the records of
faultplane.store.base. `SqliteStore` is the default behind `--db PATH`; a networked
database can replace it by implementing the same protocols.
"""

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
    SettingRepository,
    Store,
    TokenRepository,
)
from faultplane.store.sqlite import SqliteStore, default_db_path

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
]
