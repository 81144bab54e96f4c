"""SQLite schema as an ordered list of migrations; `PRAGMA user_version` is the version.

Migration N (1-based) takes the database from version N-1 to N. Each runs in its own
BEGIN IMMEDIATE transaction together with the user_version bump (both are transactional in
SQLite), so a crash mid-migration leaves the previous version intact, and two processes
opening a fresh file at once cannot both apply it: the second re-reads the version under
the write lock and finds nothing to do. Never edit a released migration; append a new one.
"""

from __future__ import annotations

import sqlite3

from faultplane.store.base import SchemaVersionError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: injections, transitions, audit chain, tokens, SLO data, settings
    (
        """CREATE TABLE injections (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            service TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX injections_state ON injections(state, created_at)",
        """CREATE TABLE transitions (
            injection_id TEXT NOT NULL
                REFERENCES injections(id) DEFERRABLE INITIALLY DEFERRED,
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (injection_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            injection_id TEXT,
            entry TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX audit_injection ON audit(injection_id, seq)",
        "CREATE INDEX audit_at ON audit(at)",
        """CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL
        )""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        """CREATE TABLE slo_readings (
            id INTEGER PRIMARY KEY,
            injection_id TEXT NOT NULL REFERENCES injections(id),
            at REAL NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX slo_readings_injection ON slo_readings(injection_id, at)",
        """CREATE TABLE baseline_samples (
            id INTEGER PRIMARY KEY,
            slo TEXT NOT NULL,
            at REAL NOT NULL,
            value REAL,
            error TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX baseline_slo_at ON baseline_samples(slo, at)",
        "CREATE INDEX baseline_at ON baseline_samples(at)",
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL
        )""",
    ),
    # 2: listing injections newest first from the index alone (finished injections leave
    # the scheduler's memory and are paged from here), and finding what retention prunes
    (
        "CREATE INDEX injections_listing ON injections(created_at, id, state, service)",
        "CREATE INDEX injections_updated ON injections(state, updated_at)",
    ),
    # 3: which hash each audit entry carries: 'sha256' (every entry written before the
    # chain was keyed) or 'hmac-sha256/<key id>' (faultplane.store.audit_key)
    ("ALTER TABLE audit ADD COLUMN scheme TEXT NOT NULL DEFAULT 'sha256'",),
    # 4: the scheduler's documents, blackouts and recurring schedules
    # (faultplane.store.scheduling_rows)
    (
        """CREATE TABLE scheduling_items (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: str, known: int = SCHEMA_VERSION) -> int:
    """Refuse a database from a newer faultplane before touching it; return its version."""
    version = _version(conn)
    if version > known:
        raise SchemaVersionError(
            f"{path} has schema version {version}, but this faultplane only knows versions "
            f"up to {known}; upgrade faultplane or point --db at another file"
        )
    return version


def migrate(
    conn: sqlite3.Connection,
    path: str,
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> int:
    """Apply every migration the database lacks; return how many were applied.

    `conn` must be in autocommit mode (isolation_level=None): transactions are explicit.
    """
    applied = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = check_version(conn, path, len(migrations))
            if version == len(migrations):
                conn.execute("COMMIT")
                return applied
            for statement in migrations[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            conn.execute("ROLLBACK")
            raise
