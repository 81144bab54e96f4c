"""The store's files are private: state dir 0700, database 0600.

The database holds token hashes, every request in the audit log, and the chain itself;
anyone who can write it can try to rewrite history, anyone who can read it learns who did
what. SQLite creates a new file with the process umask (usually 0644) and gives the -wal
and -shm files the database file's mode, so the file is created here first, 0600, before
SQLite opens it; the WAL and shared-memory files follow. A store that already exists is
not chmod-ed behind the operator's back (a backup group may rely on its mode): if group
or others may read it, a warning names the path and the mode at every open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("faultplane.store")

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(directory: Path) -> None:
    """Create `directory` 0700 if it is missing (its missing parents get the default mode;
    an existing directory keeps its own)."""
    if directory.exists():
        return
    directory.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
    os.chmod(directory, DIR_MODE)  # exactly, whatever the umask


def prepare_store_path(path: Path) -> None:
    """Create the state dir (0700) and the database file (0600) if missing; warn if an
    existing database is readable by group or others."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        warn_if_readable(path)
        return
    except OSError:
        return  # SQLite reports the problem, with its own words, when it opens the path
    os.close(fd)


def warn_if_readable(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o044:
        log.warning(
            "store file is readable by group or others",
            path=str(path),
            mode=f"{mode:04o}",
            fix=f"chmod 600 {path} {path}-wal {path}-shm",
        )
