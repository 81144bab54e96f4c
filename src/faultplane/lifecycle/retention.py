"""Retention: the store does not grow for ever either.

`faultplane serve --retain-days D` (default 90; 0 keeps every injection): once at start
and every PRUNE_EVERY_SECONDS (hourly) after, the server deletes the injections that
finished more than D days ago, with their transitions and SLO readings, and the baseline
samples older than the baseline window. The audit table is never touched: its entries
name injections by id only, so the hash chain still verifies after any pruning, and
`faultplane audit --injection ID` still tells a pruned injection's story. Memory is pruned
on the same pass: sidecars gone for an hour that carry no fault are forgotten.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.scheduler import Scheduler
from faultplane.store.base import FINISHED_STATES

log = structlog.get_logger("faultplane.retention")

DAY_SECONDS = 86400.0
DEFAULT_RETAIN_DAYS = 90.0
PRUNE_EVERY_SECONDS = 3600.0
# A sidecar gone this long, carrying no fault, is forgotten (its record, desired state
# and identity): what it acknowledged stays in its injections' evidence.
FORGET_SIDECARS_AFTER_SECONDS = 3600.0
PRUNE_BATCH = 500  # injections deleted per store transaction: the write lock stays short


class Retention:
    def __init__(
        self,
        scheduler: Scheduler,
        journal: Journal,
        retain_days: float,
        baseline_window: float,
        every: float = PRUNE_EVERY_SECONDS,
    ) -> None:
        self._scheduler = scheduler
        self._journal = journal
        self._retain_days = retain_days
        self._baseline_window = baseline_window
        self._every = every

    async def prune_once(self) -> tuple[int, int]:
        """Injections and baseline samples deleted."""
        now = time.time()
        injections = 0
        if self._retain_days > 0:
            injections = await self.prune_injections(now - self._retain_days * DAY_SECONDS)
        store = self._journal.store
        samples = await self._journal.run(
            store.readings.prune_baseline, now - self._baseline_window
        )
        forgotten = self._scheduler.forget_departed_sidecars(now - FORGET_SIDECARS_AFTER_SECONDS)
        if forgotten:
            log.info("departed sidecars forgotten", sidecars=forgotten)
        if injections or samples:
            log.info("store pruned", injections=injections, baseline_samples=samples,
                     retain_days=self._retain_days)  # fmt: skip
        return injections, samples

    async def prune_injections(self, before: float) -> int:
        """Delete the injections that finished before `before` from the store (with their
        transitions and readings; never an audit entry) and from memory; how many went.
        In small batches on the writer thread, so other writes interleave."""
        store = self._journal.store
        total = 0
        while True:
            gone = await self._journal.run(
                store.injections.prune, before, FINISHED_STATES, PRUNE_BATCH
            )
            total += gone
            if gone < PRUNE_BATCH:
                break
        self._scheduler.forget_finished_before(before)
        return total

    async def run(self) -> None:
        """Prune now, then every `every` seconds, until cancelled; a failure is logged
        and tried again next time (retention never stops the server)."""
        while True:
            try:
                await self.prune_once()
            except Exception:
                log.exception("store pruning failed; retrying at the next interval")
            await asyncio.sleep(self._every)
