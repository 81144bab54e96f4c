"""A replica's heartbeat: it publishes its own sidecars and reads the others'.

Every `interval` seconds, and at once when one of its sidecars connects or goes, the
replica writes its heartbeat and its connected sidecars to the store and reads back the
sidecars other replicas hold, keeping only those whose replica beat within `stale`
seconds (a SIGKILLed replica's sidecars leave every view by then; they reconnect to a
survivor, which claims them). Store calls run on their own thread, never the event
loop's, and a failed beat is logged and retried at the next one: the view then ages, and
stale remote rows stop counting on the readers' side by the same bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from faultplane.replicas.sidecars import SharedSidecarRegistry
from faultplane.store.base import StoreError

if TYPE_CHECKING:
    from faultplane.store.postgres_replicas import PostgresReplicas

log = structlog.get_logger("faultplane.replicas")

HEARTBEAT_SECONDS = 1.0
# A replica whose last beat is older than this is taken as gone: several missed beats,
# so a loaded machine's late beat does not flap the fleet's view.
STALE_SECONDS = 5.0
# Without a successful beat for this long, the store is taken as out of reach: the
# replica stops renewing the faults it serves and reports NOT_SERVING (fail safe).
LOST_AFTER_SECONDS = 3.0


class RegistrySync:
    def __init__(
        self,
        replicas: PostgresReplicas,
        registry: SharedSidecarRegistry,
        interval: float = HEARTBEAT_SECONDS,
        stale: float = STALE_SECONDS,
    ) -> None:
        self._replicas = replicas
        self._registry = registry
        self._interval = interval
        self._stale = stale
        self.xds_address = ""
        self.api_address = ""
        self.beats = 0  # successful beats, for tests and health
        # The store counts as lost after this long without a successful beat; each
        # listener is told `reachable` (True/False) whenever that changes.
        self.lost_after = LOST_AFTER_SECONDS
        self.reachable = True
        self.on_store: list[Callable[[bool], None]] = []
        self._ok_at: float | None = None
        self.last_beat: float | None = None  # epoch seconds of the last successful beat

    @property
    def name(self) -> str:
        return self._registry.replica

    async def beat(self) -> None:
        """One heartbeat: publish this replica's sidecars, read the others'. Raises
        StoreError when the store cannot be reached."""
        rows = self._registry.local_rows()
        now = time.time()
        await asyncio.to_thread(
            self._replicas.beat, self.name, rows, now, self.xds_address, self.api_address
        )
        remote = await asyncio.to_thread(
            self._replicas.remote_sidecars, self.name, time.time() - self._stale
        )
        self._registry.set_remote(remote)
        self.beats += 1
        self.last_beat = now

    async def run(self) -> None:
        """Beat until cancelled, judging the store reachable or not as beats succeed or
        stay away (a beat blocked on an unreachable database counts as missing)."""
        changed = self._registry.changed
        loop = asyncio.get_running_loop()
        while True:
            changed.clear()
            beat = asyncio.ensure_future(self.beat())
            while not beat.done():
                await asyncio.wait({beat}, timeout=self._interval)
                self._judge(loop.time())
            try:
                beat.result()
                self._ok_at = loop.time()
            except StoreError as exc:
                log.warning("replica heartbeat failed; retrying", replica=self.name, error=str(exc))
            self._judge(loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._interval)

    def _judge(self, now: float) -> None:
        """Tell `on_store` when the store is lost (no beat for `lost_after` seconds) or
        back (a beat succeeded since)."""
        reachable = self._ok_at is None or now - self._ok_at < self.lost_after
        if reachable != self.reachable:
            self.reachable = reachable
            log.warning("store reachable again" if reachable else "store unreachable",
                        replica=self.name)  # fmt: skip
            for listener in self.on_store:
                listener(reachable)

    async def leave(self) -> None:
        """A clean stop: this replica's sidecars leave the others' views at once."""
        try:
            await asyncio.to_thread(self._replicas.leave, self.name, time.time())
        except StoreError as exc:
            log.warning("replica could not sign off; its heartbeat will go stale",
                        replica=self.name, error=str(exc))  # fmt: skip
