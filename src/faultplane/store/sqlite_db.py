"""The SQLite connection under `SqliteStore`: opening, pragmas, migrations, transactions.

Every SQLite repository (`faultplane.store.sqlite_*`) shares one `SqliteDb`, so a write
that spans repositories (a transition with its audit entry) is one transaction.

Concurrency. One write connection per store, guarded by an internal lock, opened with
check_same_thread=False so the event loop thread or one worker thread may use it. Reads
use one read-only connection per thread, outside that lock: in WAL mode they see the last
commit without blocking writers, so a long scan (verifying the audit chain) never delays
the records of a live injection. Every
write is BEGIN IMMEDIATE: it takes SQLite's write lock up front, so writers in other
threads or processes wait (busy_timeout) instead of failing on a stale WAL snapshot, and
read-then-write sequences such as "next audit seq = head + 1" can never interleave. That is
what keeps the audit chain from forking when several servers or CLIs share one file.

Durability. WAL with synchronous=NORMAL already survives SIGKILL of the process: a
committed transaction is in the WAL file (in the OS page cache) before COMMIT returns. What
NORMAL can lose is the last commits on power loss or a kernel crash. For SLO readings and
baseline samples that is harmless, so they stay NORMAL. Injections, transitions, the audit
chain, tokens and settings record something an operator was told or the mesh was made to
do, so those commits switch to synchronous=FULL (the WAL is fsynced at COMMIT). The WAL is
append-only, so fsyncing a FULL commit also makes every earlier NORMAL commit durable: the
file never holds a durable record whose predecessors were lost.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faultplane.store.audit import canonical_json
from faultplane.store.base import StoreError
from faultplane.store.private_files import prepare_store_path
from faultplane.store.schema import check_version, migrate


def default_db_path() -> Path:
    """`$FAULTPLANE_STATE_DIR/faultplane.db`, else `~/.local/state/faultplane/faultplane.db`."""
    state_dir = os.environ.get("FAULTPLANE_STATE_DIR")
    base = Path(state_dir) if state_dir else Path.home() / ".local" / "state" / "faultplane"
    return base / "faultplane.db"


def dumps_body(body: Any, what: str) -> str:
    """The stored text of a document; only JSON objects are documents."""
    if not isinstance(body, dict):
        raise TypeError(f"{what} must be a dict, not {type(body).__name__}")
    return canonical_json(body)


class SqliteDb:
    """One SQLite connection with the pragmas, migrations and transaction helpers above."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        prepare_store_path(self.path)  # dir 0700, file 0600 (-wal/-shm follow); warns if loose
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._sync = "NORMAL"
        self._on_commit: list[Callable[[], None]] = []
        where = str(self.path)
        try:
            conn = sqlite3.connect(
                where, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {where}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            check_version(conn, where)  # before anything below changes the file
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{where}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.migrations_applied = migrate(conn, where)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{where} is not a usable faultplane database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._conn

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back whole if anything inside raises. What was
        handed to `after_commit` inside it runs once COMMIT succeeded, under the lock."""
        with self._lock:
            self._on_commit = []
            conn = self._connection()
            try:
                sync = "FULL" if durable else "NORMAL"
                if sync != self._sync:
                    conn.execute(f"PRAGMA synchronous = {sync}")
                    self._sync = sync
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
            actions, self._on_commit = self._on_commit, []
            for action in actions:
                action()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` when the current write transaction has committed, never if it rolls
        back: for effects outside the database that must not name an uncommitted row (the
        audit anchor). Actions run under the write lock, so in commit order."""
        self._on_commit.append(action)

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self.path}: store is closed")
            if conn is not None and conn in self._readers:
                return conn
            conn = sqlite3.connect(
                str(self.path),
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only = ON")
            self._readers.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so multi-query reads see one consistent snapshot."""
        try:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
