"""The PostgreSQL connection pool under `PostgresStore`: opening, migrations, transactions.

Every PostgreSQL repository (`faultplane.store.postgres_*`) shares one `PostgresDb`, and a
write that spans repositories (a transition with its audit entry) runs on one pooled
connection in one transaction (`write` yields a `Tx`).

Opening connects once directly, so an unreachable database fails the server's start with
one clear message (`StoreError`: "cannot connect to postgresql://user@host:port/db: ..."),
applies the migrations (faultplane.store.postgres_schema), then opens the pool. Pooled
connections are checked before each use, so a restarted database costs one reconnect, not
an error per stale connection.

Transactions. Writes run at READ COMMITTED: each statement sees every commit before it,
and what must be serialised across processes takes a lock first (the audit chain: a
transaction-scoped advisory lock, see faultplane.store.postgres_audit). Reads run at
REPEATABLE READ, READ ONLY, so a multi-query read (injections, then their transitions)
sees one snapshot, like SQLite's read transactions.

Durability. Commits wait for the WAL flush (synchronous_commit=on, PostgreSQL's default),
except telemetry (SLO readings, baseline samples, pruning) which sets synchronous_commit
off for its own transaction: losing the last few on a database crash costs nothing an
operator was told, and PostgreSQL never applies a later commit without the earlier ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed

from faultplane.store.base import StoreError
from faultplane.store.postgres_schema import migrate

# The journal's one writer thread and its readers (faultplane.lifecycle.journal), plus
# spares for a CLI or a test sharing the store: each replica holds at most this many.
DEFAULT_POOL_SIZE = 6
DEFAULT_CONNECT_TIMEOUT = 10.0


def redacted(url: str) -> str:
    """The connection string without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable connection string)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname', '')}"


@dataclass
class Tx:
    """One write transaction on one pooled connection."""

    conn: psycopg.Connection
    _on_commit: list[Callable[[], None]] = field(default_factory=list)

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        return self.conn.execute(query, params)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this transaction has committed, never if it rolls back: for
        effects outside the database that must not name an uncommitted row (the anchor)."""
        self._on_commit.append(action)


class PostgresDb:
    """A pool of connections to one PostgreSQL database, migrated at open."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.where = redacted(url)
        self._closed = threading.Event()
        self.migrations_applied = self._migrate(connect_timeout)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            name="faultplane-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.where}: {exc}") from exc

    def _migrate(self, connect_timeout: float) -> int:
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {_first_line(exc)}") from exc
        try:
            with conn:
                return migrate(conn, self.where)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where} is not a usable faultplane database: {exc}") from exc

    def close(self) -> None:
        """Close every pooled connection; closing twice is fine."""
        if not self._closed.is_set():
            self._closed.set()
            self._pool.close()

    @contextmanager
    def _transaction(self, setup: str) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction, started with `setup`; a database
        error anywhere inside becomes a StoreError naming the database."""
        if self._closed.is_set():
            raise StoreError(f"{self.where}: store is closed")
        try:
            with self._pool.connection() as conn, conn.transaction():
                if setup:
                    conn.execute(setup)  # type: ignore[arg-type]  # constant SQL
                yield conn
        except PoolClosed as exc:
            raise StoreError(f"{self.where}: store is closed") from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_first_line(exc)}") from exc

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Tx]:
        """One write transaction; rolled back whole if anything inside raises. What was
        handed to `Tx.after_commit` runs once COMMIT succeeded."""
        setup = "" if durable else "SET LOCAL synchronous_commit = off"
        with self._transaction(setup) as conn:
            tx = Tx(conn)
            yield tx
        for action in tx._on_commit:
            action()

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection]:
        """A read-only transaction on one snapshot."""
        with self._transaction("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") as c:
            yield c


def _first_line(exc: BaseException) -> str:
    """libpq's messages carry hints on later lines; the first says what went wrong."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
