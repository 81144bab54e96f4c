"""Drain a workload's queue with one strategy on a simulated clock, and measure it.

The clock is the packer's `forecast`: it jumps from event to event (a run ends, a window
opens, a cool-down or blackout ends, a deadline passes), so weeks of simulated time take
seconds. Every run is then judged by the independent checker against the whole policy,
whatever the strategy knew of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from bench.scheduling.checker import Started, violations
from bench.scheduling.workload import Workload
from faultplane.scheduling.packer import Planner, State, forecast

HORIZON = timedelta(days=60)
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    """What one strategy did with one workload."""

    strategy: str
    runs: tuple[Started, ...]
    expired: int
    left: int  # never found a start (e.g. longer than any of its windows)
    makespan_h: float  # from the start of the simulation to the end of the last run
    first_day_services: int  # distinct services tested in the first 24 h
    services_per_day: float  # distinct services tested per day, over the days it ran
    all_covered_h: float | None  # until every targeted service was tested once
    mean_wait_h: float  # from the start of the simulation to each run's start
    violations: tuple[str, ...]
    cpu_s: float  # planning, for the whole simulation


def _services_on(runs: tuple[Started, ...], start: datetime, day: int) -> int:
    """Distinct services with a run started in the `day`-th 24 h of the simulation."""
    begin, end = start + day * _DAY, start + (day + 1) * _DAY
    return len({s for r in runs if begin <= r.start < end for s in r.experiment.footprint.services})


def _services_per_day(runs: tuple[Started, ...], start: datetime, makespan: timedelta) -> float:
    days = max(1, math.ceil(makespan / _DAY))
    return sum(_services_on(runs, start, d) for d in range(days)) / days


def _all_covered(runs: tuple[Started, ...], workload: Workload) -> float | None:
    wanted = {s for e in workload.queue for s in e.footprint.services}
    seen: set[str] = set()
    for run in sorted(runs, key=lambda r: r.start):
        seen |= run.experiment.footprint.services
        if seen >= wanted:
            return (run.start - workload.start) / timedelta(hours=1)
    return None


def simulate(workload: Workload, name: str, planner: Planner) -> Outcome:
    """Replay the strategy until its queue is empty (or the horizon), then judge it."""
    started = time.process_time()
    future = forecast(
        State(workload.start, queue=workload.queue), workload.policy, HORIZON, planner
    )
    cpu = time.process_time() - started
    by_id = {e.id: e for e in workload.queue}
    runs = tuple(Started(by_id[ev.experiment], ev.at) for ev in future.events if ev.kind == "start")
    expired = [(by_id[ev.experiment], ev.at) for ev in future.events if ev.kind == "expire"]
    last_end = max((r.end for r in runs), default=workload.start)
    hour = timedelta(hours=1)
    return Outcome(
        strategy=name,
        runs=runs,
        expired=len(expired),
        left=len(future.state.queue),
        makespan_h=(last_end - workload.start) / hour,
        first_day_services=_services_on(runs, workload.start, 0),
        services_per_day=_services_per_day(runs, workload.start, last_end - workload.start),
        all_covered_h=_all_covered(runs, workload),
        mean_wait_h=sum((r.start - workload.start) / hour for r in runs) / max(1, len(runs)),
        violations=tuple(violations(runs, workload.policy, expired)),
        cpu_s=cpu,
    )
