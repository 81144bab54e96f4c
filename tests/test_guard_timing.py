"""The guard's clock: reads of different injections run concurrently, a tick that overran
is skipped rather than replayed with stale timestamps, and breach durations are real
elapsed time (so `abort_after` means seconds, not ticks).

The same fakes as test_guard_failsafe drive the real guard's `run()` loop. Slow sources
are simulated by awaiting inside the fake's read (the overrun under test), never to
synchronise the test, which waits for readings with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from faultplane.demo.processes import wait_until
from faultplane.model.spec import SteadyStateSpec
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import Reading
from tests.test_guard_failsafe import (
    DEADLINE,
    TICK,
    FakeInjection,
    FakeScheduler,
    FakeSpec,
    make_guard,
    running,
)

STALL = 10 * TICK  # one overrun worth ten ticks
# Breaching all along, but never long enough to abort: the test watches the readings.
WATCHED = FakeSpec(SteadyStateSpec("pay-ok", 0.9, abort_after_seconds=3600))


class BarrierSource:
    """Each injection's read returns only once every injection's read has started: reads
    made one after another would never get there (the guard's timeout would end them)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.started: set[str] = set()
        self.all_started = asyncio.Event()

    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading:
        if len(pods) == 1:  # an injection's own pod (the baseline reads the whole service)
            self.started.add(pods[0])
            if len(self.started) >= self.parties:
                self.all_started.set()
            await self.all_started.wait()
        return Reading(1.0)


async def test_reads_of_different_injections_run_concurrently() -> None:
    pods = [f"pay-{n}" for n in range(1, 4)]
    injections = [FakeInjection(f"inj-{pod}", (pod,)) for pod in pods]
    scheduler = FakeScheduler(injections)
    guard = make_guard(scheduler, pods, BarrierSource(len(pods)))

    async def everyone_read() -> bool:
        return all(i.readings for i in injections)

    async with running(guard):
        await wait_until(everyone_read, DEADLINE, "a reading of every injection")

    firsts = [i.readings[0] for i in injections]
    assert all(r.value == 1.0 and not r.breach for r in firsts), firsts


class StallingSource:
    """Always 0.5 (a breach); the injection's second read takes STALL seconds, inside the
    breach the first one started. Records when each of the injection's reads started
    (loop time) and returned (wall clock)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.returned: list[float] = []
        self.stall_ended = 0.0

    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading:
        if list(pods) == ["pay-1"]:
            loop = asyncio.get_running_loop()
            self.starts.append(loop.time())
            if len(self.starts) == 2:
                await asyncio.sleep(STALL)  # the slow read under test
                self.stall_ended = loop.time()
            self.returned.append(time.time())
        return Reading(0.5)


async def _stalled_run(readings: int) -> tuple[FakeInjection, StallingSource]:
    injection = FakeInjection("slow", ("pay-1",), WATCHED)
    source = StallingSource()
    guard = make_guard(FakeScheduler([injection]), ["pay-1", "pay-2"], source)

    async def enough() -> bool:
        return len(injection.readings) >= readings

    async with running(guard):
        await wait_until(enough, DEADLINE, f"{readings} readings")
    return injection, source


async def test_a_tick_that_overran_is_skipped_not_replayed() -> None:
    """After a read that took ten ticks, the guard resumes on its grid: at most one tick
    starts within the tick after the stall ended (replaying would fire nine at once)."""
    _, source = await _stalled_run(readings=5)

    after_stall = [s for s in source.starts[2:] if s <= source.stall_ended + TICK]
    assert len(after_stall) <= 1, [round(s - source.stall_ended, 4) for s in source.starts]


async def test_readings_carry_the_time_they_were_taken() -> None:
    """A reading's time is when it was read, not when its tick was due: the stalled read
    is stamped after it returned, and the breach it continues has lasted the stall, so
    `abort_after` is measured in seconds, not in ticks."""
    injection, source = await _stalled_run(readings=3)

    first, second = injection.readings[:2]
    assert first.breach and first.breach_seconds == 0
    # Scheduled times would say one tick; the breach has really lasted the stall.
    assert second.breach and second.breach_seconds >= STALL, second
    for reading, returned in zip(injection.readings, source.returned, strict=False):
        assert reading.at >= returned, (reading.at, returned)


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [
        (10.0, 10.2, 11.0),  # on time: the next tick of the grid
        (10.0, 15.3, 16.0),  # five ticks late: skip them, never fire them back to back
        (10.0, 15.0, 16.0),  # exactly on a grid point that is already now: the next one
        (10.0, 9.9, 11.0),  # woke early: still the next one after `due`
    ],
)
def test_next_tick_is_the_next_grid_point_in_the_future(
    due: float, now: float, expected: float
) -> None:
    from faultplane.guard.steady_state import next_tick  # new with the skip-missed rule

    assert next_tick(due, now, 1.0) == pytest.approx(expected)
