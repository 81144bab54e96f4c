"""Writes the scheduler's records and the audit log to the store, off the event loop.

SQLite commits fsync; doing them on the event loop would stall every ADS stream. One
worker thread keeps writes in the order they were made, and every write is awaited, so
"CreateInjection returned" means "the injection is on disk".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from faultplane.scheduler.model import Injection, SloReading, Transition
from faultplane.scheduler.records import injection_body, reading_body, transition_body
from faultplane.store import AuditEntry, Store

audit_log = structlog.get_logger("faultplane.audit")
T = TypeVar("T")


class Journal:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faultplane-store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def transition(self, injection: Injection, change: Transition, principal: str) -> bool:
        """Persist a transition with the injection's new state and its audit entry, in one
        transaction; False if this transition was already recorded (a replay)."""
        seq = injection.transitions.index(change)
        audit = {
            "kind": "transition",
            "at": change.at,
            "principal": principal,
            "injection_id": injection.id,
            **transition_body(change),
        }
        written = await self.run(
            self.store.record_transition,
            injection.id,
            seq,
            change.at,
            transition_body(change),
            injection.state.value,
            injection.spec.target.service,
            injection.created_at,
            injection_body(injection),
            audit,
        )
        if written:
            audit_log.info("audit", **audit)
        return written

    async def save(self, injection: Injection) -> None:
        await self.run(
            self.store.save_injection,
            injection.id,
            injection.state.value,
            injection.spec.target.service,
            injection.created_at,
            injection_body(injection),
        )

    async def reading(self, injection_id: str, reading: SloReading) -> None:
        await self.run(self.store.add_slo_reading, injection_id, reading.at, reading_body(reading))

    async def audit(self, entry: dict[str, Any]) -> AuditEntry:
        written = await self.run(self.store.append_audit, entry)
        audit_log.info("audit", seq=written.seq, **entry)
        return written

    def close(self) -> None:
        self._worker.shutdown(wait=True)
