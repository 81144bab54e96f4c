"""Writes the scheduler's records and the audit log to the store, off the event loop.

SQLite commits fsync; doing them on the event loop would stall every ADS stream. One
worker thread keeps writes in the order they were made. Admission awaits its write, so
"CreateInjection returned" means "the injection is on disk". Everything after admission
is recorded in the background (`record`, `save_later`): in order per injection, store
errors retried with backoff, never raised, so no withdrawal ever waits on, or depends
on, the store. Reads that scan (audit verification, listings) run on their own threads
and connections, so a viewer cannot queue them in front of a lifecycle's writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from faultplane.lifecycle.records import injection_record, reading_body, transition_body
from faultplane.model.injection import Injection, SloReading, Transition
from faultplane.observability import metrics
from faultplane.store import AuditEntry, Store, StoredReading, TransitionRecord
from faultplane.store.replica_rows import LeaseLost

audit_log = structlog.get_logger("faultplane.audit")
log = structlog.get_logger("faultplane.journal")
T = TypeVar("T")

# Backoff between attempts of a background record; the last delay repeats for as long
# as the store keeps failing. A lifecycle record is never given up: a lost end would let
# a restart resume a fault that was stopped. (There is one chain per injection.)
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
READ_THREADS = 2


class Journal:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faultplane-store")
        self._readers = ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="faultplane-read"
        )
        self._pending: dict[str, asyncio.Task[None]] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """On the one writer thread, in order with every other write."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """On a reader thread: never queued behind writes, never delaying them."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def record(self, injection: Injection, change: Transition, principal: str) -> None:
        """Persist a transition in the background (see the module docstring)."""
        what = f"transition to {change.to_state.value}"
        self._chain(injection.id, what, lambda: self.transition(injection, change, principal))

    def save_later(self, injection: Injection) -> None:
        """Persist the injection's current state in the background."""
        self._chain(injection.id, "injection state", lambda: self.save(injection))

    def write_later(self, key: str, what: str, write: Callable[[], Awaitable[Any]]) -> None:
        """Run `write` in the background after the previous write under `key`, retried
        like an injection's state (the scheduler's cool-down memory, say)."""
        self._chain(key, what, write)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for every background record (shutdown, tests), at most `timeout` seconds;
        False if some were still failing then (they are logged; a restart reads the store
        as it is, and an injection whose end was not recorded resumes only until its
        deadline, under a fresh guard)."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while self._pending:
            left = None if until is None else until - loop.time()
            if left is not None and left <= 0:
                log.error("records still failing at shutdown", injections=sorted(self._pending))
                for task in self._pending.values():
                    task.cancel()
                return False
            await asyncio.wait(list(self._pending.values()), timeout=left)
        return True

    def _chain(self, key: str, what: str, write: Callable[[], Awaitable[Any]]) -> None:
        previous = self._pending.get(key)
        task = asyncio.create_task(self._after(previous, key, what, write))
        self._pending[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._pending.get(key) is done:
                del self._pending[key]

        task.add_done_callback(forget)

    async def _after(
        self,
        previous: asyncio.Task[None] | None,
        key: str,
        what: str,
        write: Callable[[], Awaitable[Any]],
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        attempt = 0
        while True:
            try:
                await write()
                return
            except LeaseLost as exc:  # another replica owns it now: its record, not ours
                log.warning("record refused, not retried", injection=key, what=what,
                            error=str(exc))  # fmt: skip
                return
            except Exception as exc:
                metrics.STORE_ERRORS.labels("record").inc()
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                log.warning("store record failed, retrying", injection=key, what=what,
                            error=str(exc), retry_in_s=delay)  # fmt: skip
                attempt += 1
                await asyncio.sleep(delay)

    async def transition(self, injection: Injection, change: Transition, principal: str) -> bool:
        """Persist a transition with the injection's new state and its audit entry, in one
        transaction; False if this transition was already recorded (a replay)."""
        seq = injection.transitions.index(change)
        audit = {
            "kind": "transition",
            "at": change.at,
            "principal": principal,  # who made the change (who stopped it, for ABORTED)
            "owner": injection.owner,  # whose injection it is
            "injection_id": injection.id,
            **transition_body(change),
        }
        written = await self.run(
            self.store.injections.record_transition,
            TransitionRecord(injection.id, seq, change.at, transition_body(change)),
            injection_record(injection),
            audit,
        )
        if written:
            audit_log.info("audit", **audit)
        return written

    async def save(self, injection: Injection) -> None:
        await self.run(self.store.injections.save, injection_record(injection))

    async def reading(self, injection_id: str, reading: SloReading) -> None:
        stored = StoredReading(reading.at, reading_body(reading))
        await self.run(self.store.readings.add, injection_id, stored)

    async def audit(self, entry: dict[str, Any]) -> AuditEntry:
        written = await self.run(self.store.audit.append, entry)
        audit_log.info("audit", seq=written.seq, **entry)
        return written

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self._readers.shutdown(wait=True)
