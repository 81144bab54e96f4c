"""The injections this Chaos Toolkit run started, so that none outlives the run.

Chaos Toolkit gives an activity no way to hand its output to the next one, and it skips
rollbacks when a run is interrupted (Ctrl-C, SIGTERM) or fails. So `inject` records every
id here, with the connection it was created on, and three things read the record:
the probes (no `injection_id`: the latest one started), the rollback `abort_started`,
and the control `faultplane.chaostoolkit.control`, whose after-experiment hook Chaos
Toolkit calls whatever happened. They all run in the `chaos` process, which imports the
extension once, so a module-level registry is shared by all of them. A SIGKILLed `chaos`
runs nothing: then the injection's own deadline and faultplane's dead-man lease end it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from chaoslib.exceptions import ActivityFailed

from faultplane.chaostoolkit.connection import Connection, connection_from

_lock = threading.Lock()  # background activities run in Chaos Toolkit's thread pools
_started: dict[str, Connection] = {}  # insertion order: the last is the latest


def record(injection_id: str, connection: Connection) -> None:
    with _lock:
        _started[injection_id] = connection


def started() -> list[tuple[str, Connection]]:
    """Every (id, connection) recorded, oldest first."""
    with _lock:
        return list(_started.items())


def latest() -> tuple[str, Connection]:
    """The injection an activity without `injection_id` means."""
    with _lock:
        if not _started:
            raise ActivityFailed(
                "injection_id: not given, and this run has started no injection "
                "(run the faultplane `inject` action first, or pass injection_id)"
            )
        return next(reversed(_started.items()))


def resolve(
    injection_id: str | None,
    configuration: Mapping[str, Any] | None,
    secrets: Mapping[str, Any] | None,
) -> tuple[str, Connection]:
    """The id an activity was given (on the experiment's connection), or the latest this
    run started (on the connection it was started on)."""
    if injection_id:
        return injection_id, connection_from(configuration, secrets)
    return latest()


def clear() -> None:
    """Forget every injection (a new run in the same process starts clean)."""
    with _lock:
        _started.clear()
