"""Several `faultplane serve` replicas on one PostgreSQL store.

Each replica has a name (`serve --replica-name`, default HOSTNAME-PID), beats in the
store's `replicas` table and publishes the sidecars whose streams it holds
(`faultplane.replicas.sync`); the others' sidecars join its registry's view
(`faultplane.replicas.sidecars`), so target selection and ListSidecars on any replica see
the whole fleet. With SQLite (one process) none of this runs.
"""

from __future__ import annotations

import os
import socket


def default_replica_name() -> str:
    """HOSTNAME-PID: unique among live processes, readable in listings and logs."""
    return f"{socket.gethostname()}-{os.getpid()}"
