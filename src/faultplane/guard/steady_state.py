"""The steady-state guard: aborts an injection whose SLO stays breached, without a human.

Every tick (default 1 s) it samples the sidecars' stats once, then reads every ACTIVE
injection's SLO over its targets (and, in compare mode, over the service's other
sidecars) and records each catalogued SLO's service-wide value as baseline. A breach
starts at the first reading below `min` (or unreadable: never fly blind), a good reading
resets it, and a breach that has lasted `abort_after` aborts the injection through the same
withdrawal path as an operator abort.

The guard is what stops a fault that hurts, so it fails safe, never open:
- one injection's read is isolated from the others' (they run concurrently, each bounded by
  a timeout): whatever goes wrong reading it is an unreadable reading, a breach, for that
  injection alone;
- one sidecar's unusable admin port or unparsable stats page makes only the reads that
  need that sidecar unreadable;
- the store is never on the abort path: the abort is decided and requested before the
  reading is written, a failed or slow write is logged (the reading stays in memory), and
  the baseline's reads and writes are apart from the injections';
- readings carry the wall-clock time they were taken and a tick that overran is skipped,
  not replayed, so `abort_after` is real elapsed time (to within a tenth of a tick, so that
  readings a little early or late on their ticks still abort on the expected one).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from faultplane.delivery.plane import FaultPlane
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.scheduler import Scheduler
from faultplane.model.injection import Injection, SloReading
from faultplane.model.spec import SteadyStateSpec
from faultplane.slo.baseline import BaselineBook
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import (
    EnvoySource,
    Reading,
    SloSource,
    describe_error,
)
from faultplane.store import BaselineSample

log = structlog.get_logger("faultplane.guard")
CLOCK_TOLERANCE = 0.001
# Readings are taken when their tick runs, a little late by however long the loop and the
# sample took; jitter up to this share of a tick does not cost a whole extra tick before
# an abort. (Aborting up to a tenth of a tick early is well inside what a reading knows:
# the first breaching one only says the breach began at most a tick before it.)
JITTER_SHARE = 0.1
PRUNE_EVERY_TICKS = 600
# A little over the sources' own 2 s HTTP timeout, so their more specific error normally
# wins; this bounds any source (or sample) that hangs regardless. (asyncio.timeout, not
# wait_for: 3.11's wait_for can swallow a cancellation, and a guard that ignores its
# cancel never lets the server stop.)
READ_TIMEOUT_SECONDS = 3.0


@dataclass
class BreachTracker:
    """When the current breach began; the guard's only memory between ticks."""

    steady: SteadyStateSpec
    started: float | None = None
    # How much short of abort_after still aborts: the guard passes JITTER_SHARE of a tick.
    tolerance: float = CLOCK_TOLERANCE

    def observe(self, at: float, reading: Reading, control: Reading | None) -> SloReading:
        """`at`: the wall-clock time of the reading, so breach durations are real elapsed
        time; an unobserved gap inside a breach (a stalled guard) counts as breach."""
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
        # Times are floats, and real: 3 ticks of 1 s may add up to 2.9999998 s, or 2.98 s.
        limit = self.steady.abort_after_seconds - self.tolerance
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


def next_tick(due: float, now: float, period: float) -> float:
    """The first tick of the fixed grid (`due` + k * `period`) after `now`: a tick that
    overran skips the ticks it missed instead of firing them back to back."""
    missed = max(0, math.floor((now - due) / period))
    return due + (missed + 1) * period


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
        read_timeout: float = READ_TIMEOUT_SECONDS,
        store_wait: float | None = None,
    ) -> None:
        """`store_wait`: how long a tick waits for its store writes before moving on
        (default half a tick); the writes go on, the guarding does not wait for them."""
        self._scheduler = scheduler
        self._plane = plane
        self._catalogue = catalogue
        self._sources = sources
        self._envoy = envoy
        self._baseline = baseline
        self._journal = journal
        self._tick = tick_seconds
        self._read_timeout = read_timeout
        self._store_wait = tick_seconds / 2 if store_wait is None else store_wait
        self._trackers: dict[str, BreachTracker] = {}
        self._ticks = 0
        self._writes: set[asyncio.Task[object]] = set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Tick until cancelled, on a fixed grid: a slow tick does not shift the next one,
        and ticks it overran are skipped rather than replayed."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while True:
                try:
                    await self.tick(session)
                except Exception:  # a guard that dies silently is worse than a noisy one
                    log.exception("guard tick failed")
                due = next_tick(due, loop.time(), self._tick)
                await asyncio.sleep(due - loop.time())
        finally:
            for write in list(self._writes):
                write.cancel()

    async def tick(self, session: aiohttp.ClientSession) -> None:
        """One round: sample, then guard every ACTIVE injection and record the baseline,
        concurrently. Each part contains its own failures, so none can stop another, and
        a source that hangs costs the round one read timeout, not one per part."""
        await self._sample(session)
        active = self._scheduler.active()
        parts = [self._guard(i) for i in active] + [self._sample_baseline()]
        results = await asyncio.gather(*parts, return_exceptions=True)
        for what, result in zip([i.id for i in active] + ["baseline"], results, strict=True):
            if isinstance(result, BaseException):  # each part catches; this is a last resort
                log.error("guard failed on part of a tick", part=what, error=repr(result))
        live = {inj.id for inj in active}
        for injection_id in [i for i in self._trackers if i not in live]:
            del self._trackers[injection_id]
        await self._await_writes()

    async def _sample(self, session: aiohttp.ClientSession) -> None:
        try:
            admins, broken = self._admins()
            async with asyncio.timeout(self._read_timeout):
                await self._envoy.sample(session, admins, broken)
        except Exception as exc:  # TimeoutError, or a bug: no pod may be read from old data
            log.error("guard could not sample sidecar stats", error=repr(exc))
            self._envoy.fail(f"stats sampling failed ({type(exc).__name__})")

    async def _guard(self, injection: Injection) -> None:
        """One injection's tick. Whatever fails while reading its SLO is an unreadable
        reading for it; the abort never waits on the store."""
        steady = injection.spec.steady_state
        slo = self._catalogue.get(steady.slo)
        if slo is None:  # accepted before the catalogue was configured
            return
        try:
            reading, control = await self._read_injection(injection, slo)
        except Exception as exc:  # an unconfigured source, a plane that failed to list
            error = f"guard could not read {slo.name}: {describe_error(exc)}"
            reading, control = Reading(None, error), None
        tracker = self._trackers.get(injection.id)
        if tracker is None:
            tolerance = max(CLOCK_TOLERANCE, JITTER_SHARE * self._tick)
            tracker = self._trackers[injection.id] = BreachTracker(steady, tolerance=tolerance)
        observed = tracker.observe(time.time(), reading, control)
        if tracker.must_abort(observed):
            assert tracker.started is not None
            self._refute(injection, slo, observed, tracker.started + steady.abort_after_seconds)
        self._record(injection, observed)

    async def _read_injection(
        self, injection: Injection, slo: SloDef
    ) -> tuple[Reading, Reading | None]:
        source = self._sources[slo.source]
        service_pods = self._pods_of(slo.service)
        # The SLO of the faulted service is measured where the fault is; another service's
        # SLO (a caller, a dependency) over all of it.
        faulted = list(injection.targets_on(slo.service)) or service_pods
        if injection.spec.steady_state.compare != "control":
            return await self._bounded_read(source, slo, faulted), None
        others = [p for p in service_pods if p not in injection.targets]
        reading, control = await asyncio.gather(
            self._bounded_read(source, slo, faulted), self._bounded_read(source, slo, others)
        )
        return reading, control

    async def _bounded_read(self, source: SloSource, slo: SloDef, pods: list[str]) -> Reading:
        """The source's reading, or an unreadable one saying why it could not be had."""
        try:
            async with asyncio.timeout(self._read_timeout):
                return await source.read(slo, pods)
        except TimeoutError:
            return Reading(None, f"{slo.name}: read timed out after {self._read_timeout:g}s")
        except Exception as exc:
            return Reading(None, f"{slo.name}: read failed ({describe_error(exc)})")

    def _refute(
        self, injection: Injection, slo: SloDef, observed: SloReading, limit: float
    ) -> None:
        steady = injection.spec.steady_state
        detail = observed.error or f"{observed.value:.4f} < {steady.min:g}"
        reason = (
            f"steady-state breach: {slo.name} {detail} for "
            f"{observed.breach_seconds:.1f}s (abort_after {steady.abort_after_seconds:g}s)"
        )
        log.warning("guard aborting injection", injection=injection.id, reason=reason)
        try:
            self._scheduler.refute(injection.id, reason, limit)
        except KeyError:  # it ended and was forgotten between listing and now
            log.info("guard: injection gone before its abort", injection=injection.id)
        except Exception:  # still breaching next tick: the abort is tried again then
            log.exception("guard could not abort injection", injection=injection.id)

    def _record(self, injection: Injection, observed: SloReading) -> None:
        """Store the reading without letting the store stall or stop the guard: a failed
        write keeps the reading in memory (the injection's history) and is logged."""

        def stored(write: asyncio.Task[object]) -> None:
            if write.cancelled() or write.exception() is None:
                return
            log.error("guard reading not stored", injection=injection.id,
                      error=repr(write.exception()))  # fmt: skip
            if not any(r is observed for r in injection.readings):
                injection.readings.append(observed)

        self._write(self._scheduler.record_reading(injection.id, observed), stored)

    async def _sample_baseline(self) -> None:
        """Each catalogued SLO's service-wide value, in memory and in the store; one SLO's
        failure affects only its own sample."""
        slos = list(self._catalogue.values())
        readings = await asyncio.gather(*(self._read_service(slo) for slo in slos))
        store = self._journal.store
        for slo, reading in zip(slos, readings, strict=True):
            self._baseline.add(slo.name, reading)
            sample = BaselineSample(reading.at, reading.value, reading.error)
            self._write(
                self._journal.run(store.readings.add_baseline, slo.name, sample),
                _log_failure("baseline sample not stored", slo=slo.name),
            )
        self._ticks += 1
        if self._ticks % PRUNE_EVERY_TICKS == 0:
            since = time.time() - self._baseline.keep_seconds
            self._write(
                self._journal.run(store.readings.prune_baseline, since),
                _log_failure("baseline prune failed"),
            )

    async def _read_service(self, slo: SloDef) -> Reading:
        try:
            source, pods = self._sources[slo.source], self._pods_of(slo.service)
        except Exception as exc:  # an unconfigured source, a plane that failed to list
            return Reading(None, f"guard could not read {slo.name}: {describe_error(exc)}")
        return await self._bounded_read(source, slo, pods)

    def _write(
        self, write: Awaitable[object], done: Callable[[asyncio.Task[object]], None]
    ) -> None:
        """Start a store write; the tick waits for it at its end, but only so long."""
        task = asyncio.ensure_future(write)
        task.add_done_callback(done)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _await_writes(self) -> None:
        """Wait `store_wait` at most for the writes still running: a slow store costs a
        tick that much delay, never the guarding itself (the writes go on meanwhile)."""
        if not self._writes:
            return
        _, pending = await asyncio.wait(set(self._writes), timeout=self._store_wait)
        if pending:
            log.warning("store slow: guard moved on", writes=len(pending), waited=self._store_wait)

    def _pods_of(self, service: str) -> list[str]:
        return sorted(s.node_id for s in self._plane.candidates(service))

    def _admins(self) -> tuple[dict[str, str], dict[str, str]]:
        """(pod -> admin address, pod -> why it has none) over the envoy SLOs' services."""
        services = {slo.service for slo in self._catalogue.values() if slo.source == "envoy"}
        admins: dict[str, str] = {}
        broken: dict[str, str] = {}
        for service in services:
            for sidecar in self._plane.candidates(service):
                try:
                    address = self._plane.stats_address(sidecar.node_id)
                    if address is None:
                        raise ValueError("no stats address")
                    admins[sidecar.node_id] = address
                except ValueError as exc:
                    broken[sidecar.node_id] = str(exc)
        return admins, broken


def _log_failure(what: str, **context: str) -> Callable[[asyncio.Task[object]], None]:
    def done(write: asyncio.Task[object]) -> None:
        if not write.cancelled() and write.exception() is not None:
            log.error(what, error=repr(write.exception()), **context)

    return done
