"""What only the PostgreSQL store does, on a real server (the shared contract runs on both
backends in tests/test_store.py): versioned migrations in one transaction each and once
across concurrent starts, the keyed and anchored audit chain, a database restart survived
by the pool, and errors that name the database but never its password."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import psycopg
import pytest

from faultplane.server.config import ServerConfig
from faultplane.store import InjectionRecord, StoreError, TransitionRecord
from faultplane.store.audit import GENESIS_HASH
from faultplane.store.audit_key import open_audit_key
from faultplane.store.postgres import PostgresStore
from faultplane.store.postgres_db import redacted
from faultplane.store.postgres_schema import SCHEMA_VERSION, migrate
from tests.postgres import PostgresCluster, postgres_cluster, postgres_url  # noqa: F401


def test_a_failing_migration_leaves_the_previous_version(postgres_url: str) -> None:  # noqa: F811
    migrations = (("CREATE TABLE a (x int)",), ("CREATE TABLE b (x int)", "THIS IS NOT SQL"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            migrate(conn, "test", migrations)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        assert tables == {"a", "schema_version"}  # b was rolled back with its version row
        assert migrate(conn, "test", migrations[:1]) == 0  # re-running is a no-op


def _open_and_report(url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Runs in another process: open the store (migrating it if needed), say how many
    migrations this process applied."""
    with PostgresStore(url) as store:
        results.put(store.migrations_applied)


def test_concurrent_starts_on_a_fresh_database_migrate_it_once(postgres_url: str) -> None:  # noqa: F811
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_open_and_report, args=(postgres_url, results)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    applied = sorted(results.get(timeout=5) for _ in processes)
    # One transaction per migration under the lock: processes may take turns, but each
    # migration is applied exactly once in all.
    assert sum(applied) == SCHEMA_VERSION
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_keyed_chain_is_anchored_and_a_cut_log_is_caught(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = open_audit_key(tmp_path / "key" / "audit.key")
    with PostgresStore(postgres_url, audit_key=key) as store:
        for i in range(6):
            store.audit.append({"at": 100.0 + i, "method": "Create", "i": i})
    # close() anchored the last head; a fresh reader verifies all of it
    with PostgresStore(postgres_url, audit_key=key, anchor_writes=False) as store:
        verdict = store.audit.verify()
        assert verdict.ok, verdict.problem
        assert any(f"keyed with the audit key {key.id}" in c for c in verdict.checked)
        assert verdict.checked[-1].startswith("head matches the anchor file up to seq 6")
        # Cut the log short and rewrite its head row: still a perfectly keyed chain...
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit WHERE seq > 4")
            [(digest,)] = conn.execute("SELECT hash FROM audit WHERE seq = 4").fetchall()
            conn.execute("UPDATE audit_head SET seq = 4, hash = %s", (digest,))
        verdict = store.audit.verify()
        # ...but the anchor names entry 6, so the cut is found.
        assert not verdict.ok
        assert verdict.broken_at is not None and verdict.broken_at > 4


def test_an_unkeyed_rewrite_of_a_keyed_chain_is_caught(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = open_audit_key(tmp_path / "audit.key")
    with PostgresStore(postgres_url, audit_key=key) as store:
        first = store.audit.append({"at": 1.0, "method": "Create", "principal": "alice"})
        payload = json.dumps(
            {"seq": 1, "at": 1.0, "entry": {"at": 1.0, "method": "Create", "principal": "bob"}},
            sort_keys=True,
            separators=(",", ":"),
        )
        forged = hashlib.sha256((GENESIS_HASH + payload).encode()).hexdigest()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE audit SET entry = %s, hash = %s WHERE seq = 1",
                (json.dumps({"at": 1.0, "method": "Create", "principal": "bob"}), forged),
            )
        verdict = store.audit.verify()
    assert first.hash != forged
    assert (verdict.ok, verdict.broken_at) == (False, 1)


def test_the_pool_survives_a_database_restart(postgres_cluster: PostgresCluster) -> None:  # noqa: F811
    url = postgres_cluster.create_database()
    with PostgresStore(url, pool_size=2, connect_timeout=2) as store:
        x = InjectionRecord("x", "ACTIVE", "cart", 1.0, {})
        assert store.injections.record_transition(TransitionRecord("x", 1, 1.0, {}), x, {"a": 1})
        postgres_cluster.stop()
        with pytest.raises(StoreError, match=redacted(url).replace(".", r"\.")):
            store.injections.load()  # down: a StoreError naming the database, not a hang
        postgres_cluster.start()
        # Back: stale pooled connections are replaced on checkout, nothing else to do.
        assert store.injections.record_transition(TransitionRecord("x", 2, 2.0, {}), x, {"a": 2})
        assert [t.seq for t in store.injections.load()[0].transitions] == [1, 2]
        assert store.audit.verify().ok


def test_messages_name_the_database_without_its_password(
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> None:
    url = postgres_cluster.url("no_such_database").replace("postgres@", "postgres:s3cret@")
    assert (
        redacted(url) == f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/no_such_database"
    )
    with pytest.raises(StoreError) as refused:
        PostgresStore(url, connect_timeout=5)
    assert str(refused.value).startswith(f"cannot connect to {redacted(url)}: ")
    assert "no_such_database" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_server_config_takes_one_store_and_only_a_postgresql_url(tmp_path: Path) -> None:
    url = "postgresql://u@127.0.0.1/x"
    with pytest.raises(ValueError, match="store_url: one store only"):
        ServerConfig(mesh=None, store_url=url, db_path=tmp_path / "f.db")
    with pytest.raises(ValueError, match="store_url: must start with postgresql:// or postgres://"):
        ServerConfig(mesh=None, store_url="mysql://u:p@h/x")
    assert ServerConfig(mesh=None, store_url=url).store_url == url
