"""The steady-state guard: aborts an injection whose SLO stays breached, without a human.

Every tick (default 1 s) it samples the sidecars' stats once, records each catalogued
SLO's service-wide value as baseline, and reads every ACTIVE injection's SLO over its
targets (and, in compare mode, over the service's other sidecars). A breach starts at the
first reading below `min` (or unreadable: never fly blind), a good reading resets it, and
a breach that has lasted `abort_after` aborts the injection through the same withdrawal
path as an operator abort.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from faultplane.scheduler.delivery import FaultPlane
from faultplane.scheduler.journal import Journal
from faultplane.scheduler.model import Injection, SloReading
from faultplane.scheduler.scheduler import Scheduler
from faultplane.slo.baseline import BaselineBook
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import EnvoySource, Reading, SloSource
from faultplane.spec import SteadyStateSpec

log = structlog.get_logger("faultplane.guard")
CLOCK_TOLERANCE = 0.001
PRUNE_EVERY_TICKS = 600


@dataclass
class BreachTracker:
    """When the current breach began; the guard's only memory between ticks."""

    steady: SteadyStateSpec
    started: float | None = None

    def observe(self, at: float, reading: Reading, control: Reading | None) -> SloReading:
        """`at`: the tick's time, so breach durations are whole ticks (0, 1, 2 s...)."""
        breach = _is_breach(self.steady, reading, control)
        if not breach:
            self.started = None
        elif self.started is None:
            self.started = at
        seconds = at - self.started if self.started is not None else 0.0
        return SloReading(
            at=at,
            value=reading.value,
            breach=breach,
            breach_seconds=seconds,
            error=reading.error or (control.error if control else ""),
            control_value=control.value if control else None,
        )

    def must_abort(self, reading: SloReading) -> bool:
        # Tick times are floats: 3 ticks of 1 s may add up to 2.9999998 s.
        limit = self.steady.abort_after_seconds - CLOCK_TOLERANCE
        return reading.breach and reading.breach_seconds >= limit


def _is_breach(steady: SteadyStateSpec, reading: Reading, control: Reading | None) -> bool:
    if not reading.readable or reading.value is None:
        return True
    if reading.value >= steady.min:
        return False
    if control is None:
        return True
    # Compare mode: a dip the unfaulted sidecars share is background noise, not the fault.
    return not control.readable or control.value is None or control.value >= steady.min


class SteadyStateGuard:
    def __init__(
        self,
        scheduler: Scheduler,
        plane: FaultPlane,
        catalogue: Mapping[str, SloDef],
        sources: Mapping[str, SloSource],
        envoy: EnvoySource,
        baseline: BaselineBook,
        journal: Journal,
        tick_seconds: float = 1.0,
    ) -> None:
        self._scheduler = scheduler
        self._plane = plane
        self._catalogue = catalogue
        self._sources = sources
        self._envoy = envoy
        self._baseline = baseline
        self._journal = journal
        self._tick = tick_seconds
        self._trackers: dict[str, BreachTracker] = {}
        self._ticks = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Tick until cancelled, on a fixed schedule (a slow tick does not shift the next)."""
        loop = asyncio.get_running_loop()
        next_at, wall = loop.time(), time.time()
        while True:
            try:
                # Readings carry the tick's scheduled time, so breaches last whole ticks.
                await self.tick(session, wall)
            except Exception:  # a guard that dies silently is worse than a noisy one
                log.exception("guard tick failed")
            next_at += self._tick
            wall += self._tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def tick(self, session: aiohttp.ClientSession, at: float) -> None:
        await self._envoy.sample(session, self._admins())
        store = self._journal.store
        for slo in self._catalogue.values():
            reading = await self._sources[slo.source].read(slo, self._pods_of(slo.service))
            self._baseline.add(slo.name, reading)
            await self._journal.run(
                store.add_baseline_sample, slo.name, reading.at, reading.value, reading.error
            )
        self._ticks += 1
        if self._ticks % PRUNE_EVERY_TICKS == 0:
            await self._journal.run(store.prune_baseline, at - self._baseline.keep_seconds)
        active = self._scheduler.active()
        for injection in active:
            await self._watch(injection, at)
        live = {inj.id for inj in active}
        for injection_id in [i for i in self._trackers if i not in live]:
            del self._trackers[injection_id]

    async def _watch(self, injection: Injection, at: float) -> None:
        steady = injection.spec.steady_state
        slo = self._catalogue.get(steady.slo)
        if slo is None:  # accepted before the catalogue was configured
            return
        source = self._sources[slo.source]
        service_pods = self._pods_of(slo.service)
        if slo.service == injection.spec.target.service:
            # The SLO of the faulted service: measured where the fault is.
            reading = await source.read(slo, injection.targets)
        else:
            # Another service's SLO (a caller, a dependency): measured over all of it.
            reading = await source.read(slo, service_pods)
        control = None
        if steady.compare == "control":
            others = [p for p in service_pods if p not in injection.targets]
            control = await source.read(slo, others)
        tracker = self._trackers.setdefault(injection.id, BreachTracker(steady))
        observed = tracker.observe(at, reading, control)
        await self._scheduler.record_reading(injection.id, observed)
        if tracker.must_abort(observed):
            assert tracker.started is not None
            limit_at = tracker.started + steady.abort_after_seconds
            detail = observed.error or f"{observed.value:.4f} < {steady.min:g}"
            reason = (
                f"steady-state breach: {slo.name} {detail} for "
                f"{observed.breach_seconds:.1f}s (abort_after {steady.abort_after_seconds:g}s)"
            )
            log.warning("guard aborting injection", injection=injection.id, reason=reason)
            self._scheduler.refute(injection.id, reason, limit_at)

    def _pods_of(self, service: str) -> list[str]:
        return sorted(s.node_id for s in self._plane.candidates(service))

    def _admins(self) -> dict[str, str]:
        services = {slo.service for slo in self._catalogue.values() if slo.source == "envoy"}
        admins = {}
        for service in services:
            for sidecar in self._plane.candidates(service):
                port = sidecar.metadata.get("admin_port")
                if port:
                    admins[sidecar.node_id] = f"127.0.0.1:{int(port)}"
        return admins
