"""The store contract on both backends, on real files and a real PostgreSQL server: round
trips, idempotence, atomicity, restart survival, migrations, the audit hash chain under
tampering and concurrent writers (threads and processes), paging and pruning, tokens, SLO
data. Every test taking `store` or `backend` runs against SQLite and PostgreSQL; the ones
taking `db` pin what only the SQLite file does (WAL, user_version, file paths).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from faultplane.store import (
    AuditRepository,
    BaselineSample,
    Conflict,
    InjectionRecord,
    InjectionRepository,
    NewToken,
    ReadingRepository,
    SchedulingRepository,
    SchemaVersionError,
    SettingRepository,
    SqliteStore,
    Store,
    StoredReading,
    StoreError,
    TokenRepository,
    TransitionRecord,
    UnknownInjection,
    default_db_path,
)
from faultplane.store.audit import GENESIS_HASH
from faultplane.store.postgres import PostgresStore
from faultplane.store.postgres_schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from faultplane.store.schema import SCHEMA_VERSION, migrate
from tests.postgres import postgres_cluster  # noqa: F401  (a fixture)

AnyStore = SqliteStore | PostgresStore


def open_store(location: str) -> AnyStore:
    """The store at `location`: a postgresql:// URL or a SQLite file's path (picklable, so a
    spawned process opens its own)."""
    if location.startswith("postgresql://"):
        return PostgresStore(location)
    return SqliteStore(location)


@dataclass(frozen=True)
class Backend:
    """Where one test's store lives, and a raw connection to it beside the store, as an
    attacker or a curious operator would open it."""

    location: str

    @property
    def postgres(self) -> bool:
        return self.location.startswith("postgresql://")

    def open(self) -> AnyStore:
        return open_store(self.location)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (`?` placeholders on either backend)."""
        if self.postgres:
            with psycopg.connect(self.location, autocommit=True) as conn:
                cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []
        conn = sqlite3.connect(self.location, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def schema_version(self) -> int:
        if self.postgres:
            return int(self.sql("SELECT max(version) FROM schema_version")[0][0])
        return int(self.sql("PRAGMA user_version")[0][0])

    def set_schema_version(self, version: int) -> None:
        """Pretend a newer faultplane migrated the database."""
        if self.postgres:
            self.sql("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (version,))
        else:
            self.sql(f"PRAGMA user_version = {version}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "faultplane.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, db: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(str(db))
    return Backend(request.getfixturevalue("postgres_cluster").create_database())


@pytest.fixture
def store(backend: Backend) -> Iterator[AnyStore]:
    with backend.open() as opened:
        yield opened


def raw(db: Path) -> sqlite3.Connection:
    """A plain connection, as an attacker or a curious operator would open the file."""
    return sqlite3.connect(db, isolation_level=None)


def fill_audit(store: AnyStore, n: int = 20) -> None:
    for i in range(1, n + 1):
        store.audit.append({"at": 1000.0 + i, "method": "Create", "injection_id": f"inj-{i % 3}"})


# -- injections and transitions --------------------------------------------------------------


def test_implements_the_protocol(store: AnyStore) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.injections, InjectionRepository)
    assert isinstance(store.readings, ReadingRepository)
    assert isinstance(store.audit, AuditRepository)
    assert isinstance(store.tokens, TokenRepository)
    assert isinstance(store.settings, SettingRepository)


def transition(
    injection: InjectionRecord, seq: int, at: float, body: dict | None = None
) -> TransitionRecord:
    return TransitionRecord(injection.id, seq, at, body or {})


def test_injections_and_transitions_round_trip(store: AnyStore) -> None:
    b = InjectionRecord("b", "armed", "checkout", 20.0, {"fault": {"delay_ms": 300}})
    store.injections.save(b)
    store.injections.save(
        InjectionRecord("a", "pending", "cart", 10.0, {"owner": "alice", "n": [1, 2.5, None]})
    )
    store.injections.save(InjectionRecord("c", "done", "cart", 20.0, {}))
    assert store.injections.record_transition(transition(b, 2, 21.5, {"to": "armed"}), b, None)
    assert store.injections.record_transition(transition(b, 1, 20.5, {"to": "pending"}), b, None)
    store.injections.save(
        InjectionRecord("a", "armed", "cart", 10.0, {"owner": "alice", "v": 2})
    )  # upsert

    loaded = store.injections.load()
    assert [i.id for i in loaded] == ["a", "b", "c"]  # created_at, then id
    a, b, _ = loaded
    assert (a.state, a.service, a.created_at, a.body) == (
        "armed",
        "cart",
        10.0,
        {"owner": "alice", "v": 2},
    )
    assert a.transitions == ()
    assert [(t.seq, t.at, t.body) for t in b.transitions] == [
        (1, 20.5, {"to": "pending"}),
        (2, 21.5, {"to": "armed"}),
    ]
    assert [i.id for i in store.injections.load(states={"armed"})] == ["a", "b"]
    assert [i.id for i in store.injections.load(states=["done", "pending"])] == ["c"]
    assert store.injections.load(states=[]) == []


def test_duplicate_transition_is_refused_and_changes_nothing(store: AnyStore) -> None:
    x = InjectionRecord("x", "pending", "cart", 1.0, {"v": 1})
    store.injections.save(x)
    assert store.injections.record_transition(transition(x, 1, 2.0, {"to": "pending"}), x, None)
    assert not store.injections.record_transition(
        transition(x, 1, 9.0, {"to": "something else"}), x, None
    )
    replay = store.injections.record_transition(
        transition(x, 1, 9.0, {"to": "armed"}),
        InjectionRecord("x", "armed", "cart", 1.0, {"v": 2}),
        {"method": "replay"},
    )
    assert replay is False
    [x] = store.injections.load()
    assert (x.state, x.body) == ("pending", {"v": 1})
    assert [(t.seq, t.at, t.body) for t in x.transitions] == [(1, 2.0, {"to": "pending"})]
    assert store.audit.entries() == []


def test_reading_for_unknown_injection_is_refused(store: AnyStore) -> None:
    with pytest.raises(UnknownInjection):
        store.readings.add("ghost", StoredReading(1.0, {"value": 1}))
    assert store.injections.load() == []


def test_record_transition_writes_all_three(store: AnyStore) -> None:
    audit = {"at": 5.0, "kind": "transition", "injection_id": "x", "to": "armed"}
    x = InjectionRecord("x", "armed", "cart", 4.0, {"v": 1})
    assert store.injections.record_transition(transition(x, 1, 5.0, {"to": "armed"}), x, audit)
    [x] = store.injections.load()
    assert (x.state, x.created_at, x.body, len(x.transitions)) == ("armed", 4.0, {"v": 1}, 1)
    [entry] = store.audit.entries()
    assert (entry.seq, entry.at, entry.entry) == (1, 5.0, audit)
    done = InjectionRecord("x", "done", "cart", 4.0, {})
    assert store.injections.record_transition(transition(x, 2, 6.0, {"to": "done"}), done, None)
    assert len(store.audit.entries()) == 1


def test_record_transition_is_atomic(store: AnyStore) -> None:
    store.injections.save(InjectionRecord("x", "pending", "cart", 1.0, {"v": 1}))
    store.audit.append({"at": 1.0, "method": "Create"})
    armed = InjectionRecord("x", "armed", "cart", 1.0, {"v": 2})
    with pytest.raises(TypeError):  # the audit entry fails after the other two rows are written
        store.injections.record_transition(
            transition(armed, 1, 2.0, {"to": "armed"}), armed, {"bad": object()}
        )
    new = InjectionRecord("y", "armed", "cart", 1.0, {})
    with pytest.raises(TypeError):  # same for an injection that did not exist yet
        store.injections.record_transition(transition(new, 1, 2.0), new, {"bad": {1, 2}})
    [x] = store.injections.load()
    assert (x.state, x.body, x.transitions) == ("pending", {"v": 1}, ())
    assert len(store.audit.entries()) == 1
    assert store.audit.verify().ok
    # the failed attempt did not consume the seq: the real one goes through
    assert store.injections.record_transition(transition(armed, 1, 2.0), armed, {"ok": 1})


def test_bodies_must_be_json_objects(store: AnyStore) -> None:
    with pytest.raises(TypeError):
        store.injections.save(InjectionRecord("x", "pending", "cart", 1.0, ["not", "a", "dict"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.injections.save(InjectionRecord("x", "pending", "cart", 1.0, {"nan": float("nan")}))
    assert store.injections.load() == []


def test_the_same_transition_from_many_threads_is_recorded_once(store: AnyStore) -> None:
    x = InjectionRecord("x", "armed", "cart", 1.0, {})
    store.injections.save(x)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def record() -> None:
        barrier.wait()
        audit = {"injection_id": "x", "to": "armed"}
        results.append(store.injections.record_transition(transition(x, 1, 2.0), x, audit))

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert len(store.audit.entries(injection_id="x")) == 1
    assert [t.seq for t in store.injections.load()[0].transitions] == [1]


def test_page_is_newest_first_and_skips_what_the_caller_holds(store: AnyStore) -> None:
    for i, (state, service) in enumerate(
        [("ACTIVE", "cart"), ("COMPLETED", "cart"), ("COMPLETED", "pay"), ("ABORTED", "cart")]
    ):
        store.injections.save(InjectionRecord(f"i{i}", state, service, 10.0 + i, {"n": i}))
    store.injections.save(InjectionRecord("i5", "COMPLETED", "cart", 11.0, {"n": 5}))  # a tie

    def ids(*args: Any, **kwargs: Any) -> list[str]:
        return [i.id for i in store.injections.page(*args, **kwargs)]

    assert ids(None, None, None, 10) == ["i3", "i2", "i5", "i1", "i0"]
    assert ids(None, None, None, 2) == ["i3", "i2"]
    assert ids(None, None, (11.0, "i5"), 10) == ["i1", "i0"]  # strictly older than the cursor
    assert ids(["COMPLETED"], "cart", None, 10) == ["i5", "i1"]
    assert ids(None, None, None, 10, skip={"i3", "i5"}) == ["i2", "i1", "i0"]
    assert ids([], None, None, 10) == []
    [page] = store.injections.page(None, "pay", None, 10)
    assert (page.id, page.body, page.transitions) == ("i2", {"n": 2}, ())


def test_prune_deletes_finished_injections_with_their_records_but_never_audit(
    store: AnyStore,
) -> None:
    for i, state in enumerate(["COMPLETED", "ABORTED", "FAILED", "ACTIVE", "COMPLETED"]):
        record = InjectionRecord(f"i{i}", state, "cart", float(i), {})
        store.injections.record_transition(
            transition(record, 1, float(i)), record, {"injection_id": record.id}
        )
        store.readings.add(record.id, StoredReading(float(i), {"value": 1.0}))
    assert store.injections.prune(before=0.0) == 0  # nothing changed that long ago
    assert store.injections.prune(before=float("inf"), limit=2) == 2  # a batch
    assert store.injections.prune(before=float("inf")) == 2
    assert store.injections.prune(before=float("inf")) == 0
    [live] = store.injections.load()
    assert (live.id, [t.seq for t in live.transitions]) == ("i3", [1])
    assert store.readings.load("i0") == []
    assert len(store.readings.load("i3")) == 1
    assert store.injections.get("i0") is None
    assert len(store.audit.entries()) == 5  # the audit keeps every entry
    assert store.audit.verify().ok
    assert store.injections.prune(before=float("inf"), states=()) == 0


# -- restart survival and migrations ---------------------------------------------------------


def test_everything_survives_reopening_the_store(backend: Backend) -> None:
    first = backend.open()
    x = InjectionRecord("x", "armed", "cart", 1.0, {"v": 1})
    first.injections.record_transition(transition(x, 1, 2.0, {"to": "armed"}), x, {"a": 1})
    first.tokens.add(NewToken("t1", "alice", "operator", "h1", 1.0))
    first.readings.add("x", StoredReading(3.0, {"value": 0.99}))
    first.readings.add_baseline("cart-success", BaselineSample(3.0, 0.98, ""))
    first.settings.set("freeze", {"by": "alice"})
    # no close(): the process is treated as killed; what it committed must be read back
    second = backend.open()
    assert second.migrations_applied == 0
    [x] = second.injections.load()
    assert (x.id, x.state, [t.seq for t in x.transitions]) == ("x", "armed", [1])
    assert not second.injections.record_transition(transition(x, 1, 2.0), x, {"a": 2})
    assert [e.entry for e in second.audit.entries()] == [{"a": 1}]
    assert second.tokens.find("h1") is not None
    assert second.readings.load("x") == [(3.0, {"value": 0.99})]
    assert second.readings.baseline("cart-success", 0.0) == [(3.0, 0.98, "")]
    assert second.settings.get("freeze") == {"by": "alice"}
    assert second.audit.verify().ok
    first.close()
    second.close()


def _write_then_die(location: str) -> None:
    """Runs in a separate process: record some history, then SIGKILL itself mid-life."""
    store = open_store(location)
    for seq in (1, 2):
        audit = {"kind": "transition", "injection_id": "x", "seq": seq}
        x = InjectionRecord("x", f"s{seq}", "cart", 1.0, {})
        store.injections.record_transition(transition(x, seq, float(seq)), x, audit)
    store.readings.add("x", StoredReading(3.0, {"value": 0.5}))
    os.kill(os.getpid(), signal.SIGKILL)


def test_history_survives_sigkill(backend: Backend) -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=_write_then_die, args=(backend.location,)
    )
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGKILL
    with backend.open() as store:
        [x] = store.injections.load()
        assert (x.state, [t.seq for t in x.transitions]) == ("s2", [1, 2])
        s2 = InjectionRecord("x", "s2", "cart", 1.0, {})
        assert not store.injections.record_transition(transition(s2, 2, 2.0), s2, {"dup": 1})
        assert [e.entry["seq"] for e in store.audit.entries(injection_id="x")] == [1, 2]
        assert store.readings.load("x") == [(3.0, {"value": 0.5})]
        assert store.audit.verify().ok


def test_migrations_run_once(backend: Backend) -> None:
    known = PG_SCHEMA_VERSION if backend.postgres else SCHEMA_VERSION
    with backend.open() as store:
        assert store.migrations_applied == known
    with backend.open() as store:
        assert store.migrations_applied == 0
    assert backend.schema_version() == known


def test_sqlite_migrations_set_user_version_and_wal(db: Path) -> None:
    SqliteStore(db).close()
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = raw(tmp_path / "m.db")
    migrations = (("CREATE TABLE a (x)",), ("CREATE TABLE b (x)", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "m.db", migrations)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"a"}
    assert migrate(conn, "m.db", migrations[:1]) == 0


def test_a_newer_database_is_refused(backend: Backend) -> None:
    known = PG_SCHEMA_VERSION if backend.postgres else SCHEMA_VERSION
    backend.open().close()
    backend.set_schema_version(known + 7)
    with pytest.raises(SchemaVersionError) as refused:
        backend.open()
    assert f"version {known + 7}" in str(refused.value)
    assert f"up to {known}" in str(refused.value)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SqliteStore(junk)


def test_closed_store_refuses_use(backend: Backend) -> None:
    store = backend.open()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.injections.load()


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAULTPLANE_STATE_DIR", str(tmp_path))
    assert default_db_path() == tmp_path / "faultplane.db"
    monkeypatch.delenv("FAULTPLANE_STATE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".local/state/faultplane/faultplane.db"


# -- audit chain -----------------------------------------------------------------------------


def test_audit_hash_is_the_documented_formula(store: AnyStore) -> None:
    first = store.audit.append({"at": 12.5, "principal": "alice", "method": "Create"})
    second = store.audit.append({"method": "List"})  # no "at": the store's clock
    assert (first.seq, first.at, first.prev_hash) == (1, 12.5, GENESIS_HASH)
    assert GENESIS_HASH == "0" * 64
    payload = json.dumps(
        {"seq": 1, "at": 12.5, "entry": first.entry}, sort_keys=True, separators=(",", ":")
    )
    assert first.hash == hashlib.sha256((GENESIS_HASH + payload).encode()).hexdigest()
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.at > 1e9


def test_audit_chain_verifies(store: AnyStore) -> None:
    assert store.audit.verify().ok  # empty log
    fill_audit(store)
    verdict = store.audit.verify()
    assert (verdict.ok, verdict.entries, verdict.broken_at) == (True, 20, None)


def test_edited_entry_is_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    entry = json.dumps({"at": 1017.0, "method": "Delete", "injection_id": "inj-2"})
    backend.sql("UPDATE audit SET entry = ? WHERE seq = 17", (entry,))
    verdict = store.audit.verify()
    assert (verdict.ok, verdict.broken_at, verdict.entries) == (False, 17, 20)
    assert verdict.problem == "entry 17: hash does not match its content"


def test_edited_timestamp_and_garbage_are_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    backend.sql("UPDATE audit SET at = at + 1 WHERE seq = 4")
    assert store.audit.verify().broken_at == 4
    backend.sql("UPDATE audit SET entry = '{not json' WHERE seq = 3")
    verdict = store.audit.verify()
    assert (verdict.broken_at, verdict.problem) == (3, "entry 3: content is not valid JSON")


def test_edit_with_recomputed_hash_breaks_the_next_link(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    [(prev_hash, at)] = backend.sql("SELECT prev_hash, at FROM audit WHERE seq = 9")
    forged = {"at": at, "method": "Nothing to see", "injection_id": "inj-0"}
    payload = json.dumps(
        {"seq": 9, "at": at, "entry": forged}, sort_keys=True, separators=(",", ":")
    )
    digest = hashlib.sha256((prev_hash + payload).encode()).hexdigest()
    backend.sql("UPDATE audit SET entry = ?, hash = ? WHERE seq = 9", (json.dumps(forged), digest))
    verdict = store.audit.verify()
    assert verdict.broken_at == 10
    assert "chain broken between 9 and 10" in verdict.problem


def test_deleted_entry_is_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq = 17")
    verdict = store.audit.verify()
    assert (verdict.ok, verdict.broken_at, verdict.entries) == (False, 18, 19)
    assert "entry 18: previous entry missing (expected seq 17)" in verdict.problem
    assert "chain broken between 16 and 18" in verdict.problem


def test_deleted_first_and_last_entries_are_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    backend.sql("DELETE FROM audit WHERE seq >= 19")
    verdict = store.audit.verify()
    assert verdict.broken_at == 19
    assert "entries 19..20 missing at the end" in verdict.problem
    store.audit.append({"after": "truncation"})  # appending does not hide the hole
    assert store.audit.verify().broken_at == 21
    backend.sql("DELETE FROM audit WHERE seq = 1")
    verdict = store.audit.verify()
    assert verdict.broken_at == 2
    assert "expected seq 1" in verdict.problem


def test_swapped_entries_are_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    cols = "at, injection_id, entry, prev_hash, hash"
    [row5] = backend.sql(f"SELECT {cols} FROM audit WHERE seq = 5")
    [row9] = backend.sql(f"SELECT {cols} FROM audit WHERE seq = 9")
    update = "UPDATE audit SET at=?, injection_id=?, entry=?, prev_hash=?, hash=? WHERE seq=?"
    backend.sql(update, (*row9, 5))
    backend.sql(update, (*row5, 9))
    verdict = store.audit.verify()
    assert (verdict.ok, verdict.broken_at) == (False, 5)


def test_swapped_entry_text_only_is_found(store: AnyStore, backend: Backend) -> None:
    fill_audit(store)
    [(e5,)] = backend.sql("SELECT entry FROM audit WHERE seq = 5")
    [(e6,)] = backend.sql("SELECT entry FROM audit WHERE seq = 6")
    backend.sql("UPDATE audit SET entry = ? WHERE seq = 5", (e6,))
    backend.sql("UPDATE audit SET entry = ? WHERE seq = 6", (e5,))
    assert store.audit.verify().broken_at == 5


def test_audit_entries_filter(store: AnyStore) -> None:
    fill_audit(store)  # injection_id cycles inj-1, inj-2, inj-0; at = 1000 + seq
    inj1 = store.audit.entries(injection_id="inj-1")
    assert [e.seq for e in inj1] == [1, 4, 7, 10, 13, 16, 19]
    assert [e.seq for e in store.audit.entries(since=1018.0)] == [18, 19, 20]
    assert [e.seq for e in store.audit.entries(injection_id="inj-1", since=1010.0)] == [
        10,
        13,
        16,
        19,
    ]
    assert [e.seq for e in store.audit.entries(limit=3)] == [1, 2, 3]
    assert store.audit.entries(injection_id="nope") == []
    store.audit.append({"injection_id": 42})  # non-string ids are indexed as text
    assert [e.entry for e in store.audit.entries(injection_id="42")] == [{"injection_id": 42}]
    assert store.audit.verify().ok


def _append_with(store: AnyStore, worker: int, count: int) -> None:
    for i in range(count):
        store.audit.append({"worker": worker, "i": i})


def _append_many(location: str, worker: int, count: int) -> None:
    """Runs in another thread or process: its own store (connections) on the same data."""
    with open_store(location) as store:
        _append_with(store, worker, count)


def _assert_one_chain(store: AnyStore, expected: int) -> None:
    verdict = store.audit.verify()
    assert verdict.ok, verdict.problem
    entries = store.audit.entries()
    assert [e.seq for e in entries] == list(range(1, expected + 1))
    assert len({(e.entry["worker"], e.entry["i"]) for e in entries}) == expected


def test_concurrent_appends_from_threads(backend: Backend) -> None:
    shared = backend.open()
    where = backend.location
    threads = [threading.Thread(target=_append_with, args=(shared, w, 25)) for w in range(6)] + [
        threading.Thread(target=_append_many, args=(where, 100 + w, 25)) for w in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _assert_one_chain(shared, 250)
    shared.close()


def test_concurrent_appends_from_processes(backend: Backend) -> None:
    backend.open().close()  # create and migrate first, as the server would
    context = multiprocessing.get_context("spawn")
    where = backend.location
    processes = [context.Process(target=_append_many, args=(where, w, 60)) for w in range(2)]
    for process in processes:
        process.start()
    _append_many(where, 99, 30)  # and this process at the same time
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    with backend.open() as store:
        _assert_one_chain(store, 150)


# -- tokens, SLO data, settings --------------------------------------------------------------


def test_tokens(store: AnyStore) -> None:
    store.tokens.add(NewToken("t1", "alice", "operator", "hash-1", 10.0))
    store.tokens.add(NewToken("t2", "bob", "viewer", "hash-2", 5.0))
    with pytest.raises(Conflict):
        store.tokens.add(NewToken("t1", "carol", "admin", "hash-3", 11.0))
    with pytest.raises(Conflict):
        store.tokens.add(NewToken("t3", "carol", "admin", "hash-1", 11.0))
    found = store.tokens.find("hash-1")
    assert found is not None
    assert (found.id, found.principal, found.role, found.revoked_at) == (
        "t1",
        "alice",
        "operator",
        None,
    )
    assert store.tokens.find("hash-unknown") is None
    assert store.tokens.revoke("t1")
    assert not store.tokens.revoke("t1")  # already revoked
    assert not store.tokens.revoke("nope")
    assert store.tokens.find("hash-1") is None
    listed = store.tokens.list()
    assert [t.id for t in listed] == ["t2", "t1"]
    assert listed[1].revoked_at is not None and listed[0].revoked_at is None


def test_slo_readings_and_baseline(store: AnyStore) -> None:
    store.injections.save(InjectionRecord("x", "armed", "cart", 1.0, {}))
    store.readings.add("x", StoredReading(3.0, {"value": 0.9}))
    store.readings.add("x", StoredReading(2.0, {"value": 0.95}))
    assert store.readings.load("x") == [(2.0, {"value": 0.95}), (3.0, {"value": 0.9})]
    assert store.readings.load("y") == []
    for at in range(10):
        store.readings.add_baseline("cart", BaselineSample(float(at), at / 10, ""))
    store.readings.add_baseline("cart", BaselineSample(10.0, None, "prometheus unreachable"))
    store.readings.add_baseline("other", BaselineSample(5.0, 1.0, ""))
    assert store.readings.baseline("cart", 8.0) == [
        (8.0, 0.8, ""),
        (9.0, 0.9, ""),
        (10.0, None, "prometheus unreachable"),
    ]
    assert store.readings.prune_baseline(before=5.0) == 5
    assert [s.at for s in store.readings.baseline("cart", 0.0)] == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert store.readings.baseline("other", 0.0) == [(5.0, 1.0, "")]
    assert store.readings.prune_baseline(before=5.0) == 0


def test_settings(store: AnyStore) -> None:
    assert store.settings.get("freeze") is None
    store.settings.set("freeze", {"by": "alice", "reason": "incident 42"})
    store.settings.set("freeze", {"by": "bob"})
    assert store.settings.get("freeze") == {"by": "bob"}
    store.settings.set("freeze", None)
    assert store.settings.get("freeze") is None
    store.settings.set("freeze", None)  # deleting twice is fine


def test_scheduling_documents(backend: Backend) -> None:
    """Blackouts and schedules: kept per kind, replaced in place, deleted once, and read
    back identically by a new store on the same database (a restart)."""
    with backend.open() as store:
        assert isinstance(store.scheduling, SchedulingRepository)
        assert store.scheduling.list("blackout") == []
        store.scheduling.put("blackout", "blk-2", {"name": "month-end", "start": 1.0})
        store.scheduling.put("blackout", "blk-1", {"name": "weekend"})
        store.scheduling.put("schedule", "sch-1", {"last_fired": 10.0})
        store.scheduling.put("schedule", "sch-1", {"last_fired": 20.0})  # replaced
        assert store.scheduling.delete("blackout", "blk-2") is True
        assert store.scheduling.delete("blackout", "blk-2") is False
    with backend.open() as store:
        assert store.scheduling.list("blackout") == [("blk-1", {"name": "weekend"})]
        assert store.scheduling.get("schedule", "sch-1") == {"last_fired": 20.0}
        assert store.scheduling.get("schedule", "blk-1") is None
        with pytest.raises(TypeError):
            store.scheduling.put("blackout", "x", ["not", "a", "document"])  # type: ignore[arg-type]
