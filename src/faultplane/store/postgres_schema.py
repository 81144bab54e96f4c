"""PostgreSQL schema as an ordered list of migrations; the `schema_version` table says
which have been applied (one row per version, with when).

Migration N (1-based) takes the database from version N-1 to N. Each runs in its own
transaction together with its `schema_version` row (DDL is transactional in PostgreSQL),
so a crash mid-migration leaves the previous version intact. Every migration transaction
first takes a transaction-scoped advisory lock (MIGRATION_LOCK), so several servers
starting at once on a fresh database apply each migration exactly once: the others wait,
re-read the version and find nothing to do. Never edit a released migration; append one.

The tables mirror the SQLite store's (faultplane.store.schema) column for column, so a
record reads back identically from either; documents stay TEXT, not jsonb, because the
audit chain hashes an entry's stored text and verification must read back exactly that.
"""

from __future__ import annotations

import time

import psycopg

from faultplane.store.base import SchemaVersionError

# pg_advisory_xact_lock keys, one per thing serialised across processes. A namespace of
# our own ("fp" in the high bytes) keeps them apart from other applications' locks.
MIGRATION_LOCK = 0x6670_0000_0001
AUDIT_CHAIN_LOCK = 0x6670_0000_0002
ADMISSION_LOCK = 0x6670_0000_0003  # replicas admit one injection at a time

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: injections, transitions, the audit chain, tokens, SLO data, settings: the shape of
    # SQLite's schema version 3, with its indexes
    (
        """CREATE TABLE injections (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            service TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX injections_state ON injections (state, created_at)",
        "CREATE INDEX injections_listing ON injections (created_at, id, state, service)",
        "CREATE INDEX injections_updated ON injections (state, updated_at)",
        """CREATE TABLE transitions (
            injection_id TEXT NOT NULL
                REFERENCES injections (id) DEFERRABLE INITIALLY DEFERRED,
            seq BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (injection_id, seq)
        )""",
        """CREATE TABLE audit (
            seq BIGINT PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            injection_id TEXT,
            entry TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            scheme TEXT NOT NULL DEFAULT 'sha256'
        )""",
        "CREATE INDEX audit_injection ON audit (injection_id, seq)",
        "CREATE INDEX audit_at ON audit (at)",
        """CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL
        )""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        """CREATE TABLE slo_readings (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            injection_id TEXT NOT NULL REFERENCES injections (id),
            at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX slo_readings_injection ON slo_readings (injection_id, at)",
        """CREATE TABLE baseline_samples (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            slo TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            value DOUBLE PRECISION,
            error TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX baseline_slo_at ON baseline_samples (slo, at)",
        "CREATE INDEX baseline_at ON baseline_samples (at)",
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    # 2: the scheduler's documents, blackouts and recurring schedules
    # (faultplane.store.scheduling_rows), as SQLite's version 4
    (
        """CREATE TABLE scheduling_items (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
    ),
    # 3: replicas (faultplane.replicas): each serving process and its heartbeat, and the
    # shared sidecar registry (which replica holds each sidecar's stream)
    (
        """CREATE TABLE replicas (
            name TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL,
            xds_address TEXT NOT NULL DEFAULT '',
            api_address TEXT NOT NULL DEFAULT '',
            stopped_at DOUBLE PRECISION
        )""",
        """CREATE TABLE replica_sidecars (
            node_id TEXT PRIMARY KEY,
            replica TEXT NOT NULL,
            cluster TEXT NOT NULL,
            metadata TEXT NOT NULL,
            connected BOOLEAN NOT NULL,
            connected_at DOUBLE PRECISION,
            disconnected_at DOUBLE PRECISION,
            heartbeat_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX replica_sidecars_replica ON replica_sidecars (replica, connected)",
    ),
    # 4: faults across replicas (faultplane.replicas.plane): each owner's desired faults
    # per sidecar, and the evidence the sidecar's holding replica records for them
    (
        "CREATE SEQUENCE fault_seq",
        """CREATE TABLE fault_desired (
            node_id TEXT NOT NULL,
            fault_key TEXT NOT NULL,
            injection_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            level DOUBLE PRECISION NOT NULL,
            lease_until DOUBLE PRECISION,
            removed BOOLEAN NOT NULL,
            seq BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (node_id, fault_key)
        )""",
        "CREATE INDEX fault_desired_owner ON fault_desired (owner, node_id)",
        """CREATE TABLE fault_evidence (
            node_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            seq BIGINT NOT NULL,
            replica TEXT NOT NULL,
            acked BOOLEAN NOT NULL,
            version TEXT NOT NULL,
            error TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (node_id, owner)
        )""",
    ),
    # 5: one owner per live injection (faultplane.replicas.ownership): its lease, and the
    # fencing token that grows with every change of owner
    (
        """CREATE TABLE injection_leases (
            injection_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            token BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE injection_stop_requests (
            injection_id TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            principal TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
)"""


def schema_version(conn: psycopg.Connection) -> int:
    """The highest applied migration (0 for a fresh database)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def check_version(conn: psycopg.Connection, where: str, known: int = SCHEMA_VERSION) -> int:
    """Refuse a database from a newer faultplane before touching it; return its version."""
    version = schema_version(conn)
    if version > known:
        raise SchemaVersionError(
            f"{where} has schema version {version}, but this faultplane only knows versions "
            f"up to {known}; upgrade faultplane or point --store at another database"
        )
    return version


def migrate(
    conn: psycopg.Connection,
    where: str,
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> int:
    """Apply every migration the database lacks, one transaction each; how many were
    applied (0: it was current, so re-running is a no-op). `conn` is in autocommit mode:
    the transactions are explicit."""
    applied = 0
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_VERSION_TABLE)
            version = check_version(conn, where, len(migrations))
            if version == len(migrations):
                return applied
            for statement in migrations[version]:
                conn.execute(statement)  # type: ignore[arg-type]  # our own constant SQL
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                (version + 1, time.time()),
            )
        applied += 1
