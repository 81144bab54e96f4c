"""When the control server was up, so that a restart can tell an injection's outage.

A resumed injection must not read as one unbroken ACTIVE: while no server renewed its
lease, its fault went off. The store's `server_run` setting records the running server:
when it started, a heartbeat rewritten every HEARTBEAT_SECONDS, its dead-man TTL, and,
after a clean stop (SIGTERM), when it stopped. The next server reads it before resuming
anything and derives, for each injection it resumes:

- last alive: the stop time after a clean stop; after a crash, the last heartbeat (or
  the injection's own last reading or transition, if later: the server was up then too);
- fault off, at the latest: the server renews the lease while it lives, so a lease it
  granted lapsed at most one TTL after its last renewal, and it renewed no later than it
  died: stop + TTL, or (crash) last heartbeat + two heartbeat intervals (a beat may run
  late by up to one) + TTL, and never past the injection's deadline. It is an upper
  bound: the fault may have gone off earlier, never later (unless the server's beats
  were stalled for longer than an interval, when its leases were at risk anyway);
- resumed: now (the targets get the fault back as each reconnects).

That story is recorded as an ACTIVE -> ACTIVE transition (see `outage_reason`), so it is
in `faultplane get` history and in the audit chain. Without a `server_run` record (a
store from before this existed) the transition says what is unknown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import LEASE_GRACE_SECONDS
from faultplane.model.injection import Injection

log = structlog.get_logger("faultplane.scheduler")

SETTING = "server_run"
HEARTBEAT_SECONDS = 2.0


@dataclass(frozen=True)
class ServerRun:
    """One server's life as the store knows it (the `server_run` setting)."""

    started_at: float
    alive_at: float
    deadman_ttl: float
    heartbeat_seconds: float
    stopped_at: float | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any] | None) -> ServerRun | None:
        """None when absent or unreadable: the story then says it is not on record."""
        if not body:
            return None
        try:
            stopped = body.get("stopped_at")
            return cls(
                float(body["started_at"]),
                float(body["alive_at"]),
                float(body["deadman_ttl"]),
                float(body["heartbeat_seconds"]),
                None if stopped is None else float(stopped),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def body(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "alive_at": self.alive_at,
            "deadman_ttl": self.deadman_ttl,
            "heartbeat_seconds": self.heartbeat_seconds,
            "stopped_at": self.stopped_at,
        }

    @property
    def lease_lapsed_by(self) -> float:
        """The latest moment a fault this server leased could still have been on."""
        if self.stopped_at is not None:
            return self.stopped_at + self.deadman_ttl
        return self.alive_at + 2 * self.heartbeat_seconds + self.deadman_ttl


class Uptime:
    """Reads the previous server's record, then keeps this server's up to date."""

    def __init__(
        self, journal: Journal, deadman_ttl: float, heartbeat_seconds: float = HEARTBEAT_SECONDS
    ) -> None:
        self._journal = journal
        self._ttl = deadman_ttl
        self._every = heartbeat_seconds
        self._run: ServerRun | None = None
        self._task: asyncio.Task[None] | None = None

    async def previous(self) -> ServerRun | None:
        store = self._journal.store
        return ServerRun.from_body(await self._journal.read(store.settings.get, SETTING))

    async def begin(self) -> None:
        """Record this server as started and alive, and keep the heartbeat going."""
        now = time.time()
        self._run = ServerRun(now, now, self._ttl, self._every)
        try:
            await self._write(self._run)
        except Exception as exc:  # the next beat tries again; never a reason not to start
            log.warning("could not record the server's start", error=str(exc))
        self._task = asyncio.create_task(self._beat(), name="faultplane-heartbeat")

    async def end(self) -> None:
        """A clean stop: faults left on now lapse within one TTL from here."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._run is None:
            return
        now = time.time()
        self._run = ServerRun(self._run.started_at, now, self._ttl, self._every, stopped_at=now)
        try:
            await self._write(self._run)
        except Exception as exc:  # the next start then reads it as a crash: still honest
            log.warning("could not record the server's stop", error=str(exc))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            assert self._run is not None
            run = ServerRun(self._run.started_at, time.time(), self._ttl, self._every)
            try:
                await self._write(run)
                self._run = run
            except Exception as exc:  # a missed beat only widens the next outage's bound
                log.warning("could not record the server heartbeat", error=str(exc))

    async def _write(self, run: ServerRun) -> None:
        await self._journal.run(self._journal.store.settings.set, SETTING, run.body())


def outage_reason(
    previous: ServerRun | None, injection: Injection, resumed_at: float, remaining: float
) -> str:
    """The ACTIVE -> ACTIVE transition's reason for an injection resumed after a restart."""
    seen = max([t.at for t in injection.transitions] + [r.at for r in injection.readings[-1:]])
    resumed = f"resumed at {when(resumed_at)} with {remaining:.1f}s left"
    if previous is None:
        return (
            "control server restarted; when the previous one stopped is not on record (its "
            f"last record of this injection is from {when(seen)}): the fault was off from at "
            f"most one dead-man TTL after that until it was {resumed}"
        )
    if previous.stopped_at is not None:
        down = f"the previous one stopped at {when(previous.stopped_at)}"
    else:
        down = f"the previous one crashed, last seen alive at {when(max(previous.alive_at, seen))}"
    # A record of this injection later than the heartbeat bound (a stalled store delayed
    # the beats) means the server was alive then, and may have renewed the lease then.
    off = max(previous.lease_lapsed_by, seen + previous.deadman_ttl)
    if injection.ends_at is not None:  # no lease is ever granted past the deadline
        off = min(off, injection.ends_at + LEASE_GRACE_SECONDS)
    if off < resumed_at:
        return (
            f"control server restarted: {down}; fault off from {when(off)} at the latest "
            f"(its {previous.deadman_ttl:g}s lease lapsed) to {when(resumed_at)}; {resumed}"
        )
    return (
        f"control server restarted: {down}; its {previous.deadman_ttl:g}s lease may have "
        f"outlived the outage (it ran to {when(off)} at the latest); {resumed}"
    )


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
