"""A local PostgreSQL server run by faultplane itself: for `faultplane demo --replicas N`
and `mesh up --replicas N` when no --store is given, and for the tests (tests/postgres.py).

Debian's `postgresql` package provides the binaries. PostgreSQL refuses to run as root, so
under root the cluster belongs to the unprivileged `postgres` user: its directory is
handed to that user, initdb runs through `runuser`, and the server through `setpriv`,
which execs in place, so the PID held is the postmaster's own and it is stopped by that
PID (SIGINT: a fast shutdown that does not wait for clients). It listens on 127.0.0.1 on
a free port, with its socket in the cluster dir, and trusts local connections: a
throwaway server, never one to keep data in.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from faultplane.demo.ports import free_port
from faultplane.demo.processes import Child

START_TIMEOUT = 60.0  # a loaded 2-core machine; a healthy start takes well under 5 s
OWNER = "postgres"


class PostgresMissing(RuntimeError):
    """No PostgreSQL binaries on this machine."""


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (raises PostgresMissing)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise PostgresMissing(
                "PostgreSQL is not installed (no initdb): apt-get install -y postgresql"
            )
        return Path(on_path).parent
    return Path(found[0]).parent


def _major(initdb: str) -> int:
    version = Path(initdb).parent.parent.name
    return int(version) if version.isdigit() else 0


class PostgresCluster:
    """One PostgreSQL server in its own directory, started and stopped by PID."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.port = free_port()
        self.server: Child | None = None
        self._names = itertools.count(1)
        self._as_owner = os.geteuid() == 0

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        """initdb: trust auth for the local user, no fsync (a throwaway test cluster)."""
        if self._as_owner:
            entry = pwd.getpwnam(OWNER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        argv = [
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", OWNER,
            "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        if self._as_owner:
            argv = ["runuser", "-u", OWNER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Run the postmaster in the foreground and wait until it accepts connections."""
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200",
        ]  # fmt: skip
        if self._as_owner:
            argv = ["setpriv", "--reuid", OWNER, "--regid", OWNER, "--init-groups", "--", *argv]
        self.server = Child("postgres", argv, self.root / "postgres.log").start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts_connections():
            if not self.server.alive():
                raise RuntimeError(f"postgres exited at start:\n{self.server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres not ready after {START_TIMEOUT:g}s")
            time.sleep(0.05)

    def _accepts_connections(self) -> bool:
        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it does not go within the bound."""
        server, self.server = self.server, None
        if server is None:
            return
        server.kill(signal.SIGINT)
        server.stop(timeout=20.0)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]  # our own name
        return self.url(name)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def local_postgres() -> PostgresCluster:
    """A new PostgreSQL server in a temp dir, started; `stop()` then `remove()` it."""
    root = Path(tempfile.mkdtemp(prefix="faultplane-pg-"))
    cluster = PostgresCluster(root, postgres_bindir())
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.stop()
        cluster.remove()
        raise
    return cluster
