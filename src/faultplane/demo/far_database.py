"""A real PostgreSQL as the "managed database" at the far end of a veth link (root).

Debian's `postgresql` binaries, run as the unprivileged `postgres` user (PostgreSQL
refuses root): initdb through `runuser`, the postmaster through `ip netns exec` and
`setpriv` (which exec in place, so the PID held is the postmaster's own, stopped by it).
It listens only on the far end's address and trusts the pod's: a throwaway server that
exists only inside the two namespaces.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from faultplane.demo.netns import Link
from faultplane.demo.processes import Child

OWNER = "postgres"
PORT = 5432
START_TIMEOUT = 60.0


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, None if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _major(initdb: str) -> int:
    version = Path(initdb).parent.parent.name
    return int(version) if version.isdigit() else 0


class FarDatabase:
    """PostgreSQL in `link.far`, on `link.far_address:5432`; `url` from the pod's side."""

    def __init__(self, link: Link, bindir: Path) -> None:
        self.link = link
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="faultplane-far-pg-"))
        self.data = self.root / "data"
        self.server: Child | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{OWNER}@{self.link.far_address}:{PORT}/postgres"

    def start(self) -> None:
        """initdb, then the postmaster in the far namespace (not waited for: the caller
        polls from the pod's side, which is also the path the app uses)."""
        entry = pwd.getpwnam(OWNER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        initdb = [
            "runuser", "-u", OWNER, "--", str(self.bindir / "initdb"), "-D", str(self.data),
            "-U", OWNER, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(initdb, capture_output=True, text=True, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        hba = self.root / "pg_hba.conf"
        hba.write_text(f"host all all {self.link.pod_address}/32 trust\n")
        hba.chmod(0o644)
        argv = [
            "ip", "netns", "exec", self.link.far,
            "setpriv", "--reuid", OWNER, "--regid", OWNER, "--init-groups", "--",
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(PORT),
            "-k", str(self.root), "-c", f"listen_addresses={self.link.far_address}",
            "-c", f"hba_file={hba}", "-c", "fsync=off", "-c", "max_connections=50",
        ]  # fmt: skip
        self.server = Child("postgres", argv, self.root / "postgres.log").start()

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it lingers; the directory goes."""
        server, self.server = self.server, None
        if server is not None:
            server.kill(signal.SIGINT)
            server.stop(timeout=20.0)
        shutil.rmtree(self.root, ignore_errors=True)
