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
        """Beat until cancelled."""
        changed = self._registry.changed
        while True:
            changed.clear()
            try:
                await self.beat()
            except StoreError as exc:
                log.warning("replica heartbeat failed; retrying", replica=self.name, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._interval)

    async def leave(self) -> None:
        """A clean stop: this replica's sidecars leave the others' views at once."""
        try:
            await asyncio.to_thread(self._replicas.leave, self.name, time.time())
        except StoreError as exc:
            log.warning("replica could not sign off; its heartbeat will go stale",
                        replica=self.name, error=str(exc))  # fmt: skip
