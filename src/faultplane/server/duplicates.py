"""The audit entry for a refused duplicate sidecar: a second connection with a node id
that another connection still holds.

The xDS layer refuses the newcomer (ALREADY_EXISTS) and calls back here. A misconfigured
fleet (two Envoys sharing a node id) retries every second for ever, so the audit log gets
one entry per (node id, refused peer) per window, never one per retry, and the set of
pairs remembered is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import structlog

from faultplane.lifecycle.journal import Journal

log = structlog.get_logger("faultplane.server")

AUDIT_WINDOW_SECONDS = 300.0
MAX_REMEMBERED = 1024


class DuplicateSidecars:
    def __init__(
        self,
        journal: Journal,
        window: float = AUDIT_WINDOW_SECONDS,
        remembered: int = MAX_REMEMBERED,
    ) -> None:
        self._journal = journal
        self._window = window
        self._remembered = remembered
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._writes: set[asyncio.Task[object]] = set()

    def __call__(self, node_id: str, peer: str, holder: str) -> None:
        """Called by the xDS servers (synchronously, on the event loop)."""
        now = time.monotonic()
        key = (node_id, peer)
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            return
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._remembered:
            self._last.popitem(last=False)
        entry = {
            "kind": "sidecar",
            "at": time.time(),
            "method": "xds.duplicate_node",
            "principal": node_id,
            "via": "xds",
            "peer": peer,
            "outcome": "ALREADY_EXISTS",
            "detail": f"node id {node_id!r} is held by the connection from {holder}; "
            f"the connection from {peer} was refused",
            "injection_id": "",
        }
        write = asyncio.get_running_loop().create_task(self._journal.audit(entry))
        self._writes.add(write)
        write.add_done_callback(self._done)

    def _done(self, write: asyncio.Task[object]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.error("duplicate sidecar not audited", error=repr(write.exception()))
