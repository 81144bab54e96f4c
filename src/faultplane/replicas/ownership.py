"""Exactly one owner per live injection: its timer, guard and withdrawal run on the
replica holding its lease (faultplane.store.postgres_leases).

`Ownership` is this replica's side of it:
- it is the store's fence: every write of an injection carries the token this replica
  holds for it; a new injection's first write takes its lease (token 1) in the same
  transaction, so it never exists live without an owner;
- every `ttl`/3 seconds it renews the leases of its running lifecycles. One it finds
  taken over (another replica holds a higher token) is dropped here at once, without a
  withdrawal (the new owner carries it on); if it cannot renew for a whole `ttl` (the
  database is out of reach) it drops them all, since by then another replica may own
  them, and its own copies of their faults go with them;
- it takes over every live injection whose lease expired (its owner died): the same
  path a restart takes (faultplane.lifecycle.restore), for that one injection;
- it carries out the stop requests (aborts asked on other replicas) for its injections.

The guard runs once per tick per injection because only the owner holds the injection
in memory as live: the others read it from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from faultplane.model.injection import State
from faultplane.store.base import StoreError
from faultplane.store.replica_rows import LeaseLost

if TYPE_CHECKING:
    from faultplane.lifecycle.scheduler import Scheduler
    from faultplane.store.postgres_leases import PostgresLeases

log = structlog.get_logger("faultplane.replicas")

# How long an owner's lease lasts unrenewed: the longest a dead owner's injections go
# without a timer and a guard before another replica takes them over.
LEASE_SECONDS = 5.0
# What a lease's expiry means takes these states (QUEUED ones are not anyone's yet).
OWNED_STATES = tuple(s.value for s in State if s.live and s is not State.QUEUED)
LIVE = tuple(s.value for s in State if s.live)


class Ownership:
    def __init__(self, leases: PostgresLeases, owner: str, ttl: float = LEASE_SECONDS) -> None:
        self.owner = owner
        self.ttl = ttl
        self._leases = leases
        self._held: dict[str, int] = {}  # injection -> the token this replica holds
        self._lost: set[str] = set()
        self._scheduler: Scheduler | None = None
        self._renewed_at = time.monotonic()
        self._wake = asyncio.Event()
        self._stopping: set[asyncio.Task[object]] = set()
        self.takeovers = 0  # how many injections this replica took over

    # The store's fence (faultplane.store.replica_rows.Fence).
    def token(self, injection_id: str) -> int | None:
        if injection_id in self._lost:
            raise LeaseLost(f"injection {injection_id}: replica {self.owner} lost its lease")
        return self._held.get(injection_id)

    def granted(self, injection_id: str, token: int) -> None:
        self._held[injection_id] = token

    def holds(self, injection_id: str) -> bool:
        return injection_id in self._held

    async def claim(self, injection_id: str) -> bool:
        """Take the injection's lease if it is free or expired."""
        token = await asyncio.to_thread(self._leases.claim, injection_id, self.owner, self.ttl)
        if token is None:
            return False
        self._held[injection_id] = token
        self._lost.discard(injection_id)
        return True

    def attach(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def wake(self, *_: object) -> None:
        """Look now (a stop request was announced)."""
        self._wake.set()

    async def run(self) -> None:
        """Renew, take over, carry out stop requests, every ttl/3 until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.ttl / 3)
            self._wake.clear()
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("cannot reach the store for leases", error=str(exc))
                if time.monotonic() - self._renewed_at > self.ttl:
                    self._give_up_all()

    async def tick(self) -> None:
        assert self._scheduler is not None
        leases, held = self._leases, dict(self._held)
        renewed = await asyncio.to_thread(leases.renew, self.owner, held, self.ttl)
        self._renewed_at = time.monotonic()
        for injection_id in set(held) - renewed:
            self._give_up(injection_id, "another replica took its lease over")
        for injection_id in await asyncio.to_thread(leases.release_finished, self.owner, LIVE):
            self._held.pop(injection_id, None)
        running = set(self._scheduler.running())
        for injection_id in await asyncio.to_thread(leases.orphans, OWNED_STATES):
            if injection_id not in running and await self.claim(injection_id):
                await self._take_over(injection_id)
        requests = await asyncio.to_thread(leases.stop_requests, list(self._held))
        for injection_id, reason, principal in requests:
            self._stop(injection_id, reason, principal)

    async def _take_over(self, injection_id: str) -> None:
        assert self._scheduler is not None
        reason = (
            f"taken over by replica {self.owner}: its previous owner stopped renewing its "
            f"lease ({self.ttl:g}s)"
        )
        self.takeovers += 1
        log.warning("taking an injection over", injection=injection_id, replica=self.owner)
        await self._scheduler.take_over(injection_id, reason)

    def _give_up(self, injection_id: str, why: str) -> None:
        assert self._scheduler is not None
        self._held.pop(injection_id, None)
        self._lost.add(injection_id)
        log.warning("dropping an injection", injection=injection_id, why=why)
        self._scheduler.relinquish(injection_id)

    def _give_up_all(self) -> None:
        for injection_id in list(self._held):
            self._give_up(injection_id, f"its lease could not be renewed for {self.ttl:g}s")

    def _stop(self, injection_id: str, reason: str, principal: str) -> None:
        assert self._scheduler is not None
        if any(t.get_name() == injection_id for t in self._stopping):
            return
        task = asyncio.create_task(
            self._scheduler.abort(injection_id, reason, principal), name=injection_id
        )
        self._stopping.add(task)
        task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[object]) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("stop request not carried out", injection=task.get_name(),
                     error=str(task.exception()))  # fmt: skip
