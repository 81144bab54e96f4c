"""An independent check of a schedule: every rule, re-derived from the raw data.

It must not share a bug with the scheduler, so it imports no scheduler module at run
time (only their data shapes, for type hints): it reads the plain fields of the
experiments and the policy and decides every rule its own way, by brute force: all
pairs of runs that overlap in time, the dependency closure by its own search, windows
and weekly blackouts by looking at the local wall clock of every minute of every run
(so all times must be whole minutes, as the bench's and the tests' are)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the shapes of the data; no scheduler code runs here
    from faultplane.scheduling.model import Experiment
    from faultplane.scheduling.rules import Policy
    from faultplane.scheduling.windows import OneOffBlackout, WeeklyBlackout, Window

_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Started:
    """One run as it happened (or is planned): the experiment and its start."""

    experiment: Experiment
    start: datetime

    @property
    def end(self) -> datetime:
        return self.start + self.experiment.duration


def _closure(calls: Mapping[str, frozenset[str]]) -> dict[str, set[str]]:
    """Every service each service reaches, by a depth-first search of its own."""
    reach: dict[str, set[str]] = {}
    for root in calls:
        seen: set[str] = set()

        def visit(service: str, seen: set[str] = seen) -> None:
            for callee in calls.get(service, ()):
                if callee not in seen:
                    seen.add(callee)
                    visit(callee)

        visit(root)
        seen.discard(root)
        reach[root] = seen
    return reach


def _minutes(start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += _MINUTE
    return out


def _in_range(local: datetime, days: frozenset[int], start: time, end: time) -> bool:
    wall = local.time().replace(tzinfo=None)
    if end <= start:  # past midnight: the evening of an open day or the morning after it
        return (local.weekday() in days and wall >= start) or (
            (local.weekday() - 1) % 7 in days and wall < end
        )
    return local.weekday() in days and start <= wall < end


def _window_open(windows: Sequence[Window], t: datetime) -> bool:
    for w in windows:
        local = t.astimezone(w.zone)
        if any(_in_range(local, w.weekdays, r.start, r.end) for r in w.ranges):
            return True
    return False


def _blacked_out(blackout: OneOffBlackout | WeeklyBlackout, start: datetime, end: datetime) -> bool:
    if not hasattr(blackout, "start_day"):  # one-off
        return blackout.start < end and start < blackout.end
    week = 7 * 1440
    opens = blackout.start_day * 1440 + blackout.start_time.hour * 60 + blackout.start_time.minute
    closes = blackout.end_day * 1440 + blackout.end_time.hour * 60 + blackout.end_time.minute
    for t in _minutes(start, end):
        local = t.astimezone(blackout.zone)
        m = (local.weekday() * 1440 + local.hour * 60 + local.minute) % week
        inside = opens <= m < closes if opens < closes else (m >= opens or m < closes)
        if inside:
            return True
    return False


def violations(
    runs: Sequence[Started],
    policy: Policy,
    expired: Sequence[tuple[Experiment, datetime]] = (),
) -> list[str]:
    """Every rule a schedule breaks, one line each; [] when it keeps them all."""
    found: list[str] = []
    reach = _closure(policy.graph.calls)
    ids = [r.experiment.id for r in runs] + [e.id for e, _ in expired]
    found += [
        f"{i}: started or expired twice" for i in sorted({i for i in ids if ids.count(i) > 1})
    ]
    for r in runs:
        e = r.experiment
        if policy.frozen:
            found.append(f"{e.id}: started while frozen")
        if e.not_before is not None and r.start < e.not_before:
            found.append(f"{e.id}: started before not_before")
        if e.not_after is not None and r.start >= e.not_after:
            found.append(f"{e.id}: started after its deadline")
        if e.windows and not all(_window_open(e.windows, t) for t in _minutes(r.start, r.end)):
            found.append(f"{e.id}: runs outside its windows")
        found += [
            f"{e.id}: meets blackout {b.name}"
            for b in policy.blackouts
            if _blacked_out(b, r.start, r.end)
        ]
    for e, at in expired:
        if e.not_after is None or at < e.not_after:
            found.append(f"{e.id}: expired before its deadline")
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            found += _pair(a, b, reach)
    found += _cooldown(runs, policy)
    found += _concurrency(runs, policy)
    return found


def _pair(a: Started, b: Started, reach: Mapping[str, set[str]]) -> list[str]:
    """The overlap and dependency rules for two runs."""
    if not (a.start < b.end and b.start < a.end):
        return []
    ea, eb = a.experiment, b.experiment
    if ea.footprint.slots & eb.footprint.slots:
        return [f"{ea.id} and {eb.id}: same sidecar and scope at once"]
    if ea.allow_dependent and eb.allow_dependent:
        return []
    for x in ea.footprint.services:
        for y in eb.footprint.services:
            if x != y and (y in reach.get(x, ()) or x in reach.get(y, ())):
                return [f"{ea.id} and {eb.id}: {x} and {y} on one request path at once"]
    return []


def _cooldown(runs: Sequence[Started], policy: Policy) -> list[str]:
    if policy.cooldown is None:
        return []
    starts: dict[str, list[tuple[datetime, str]]] = {}
    for r in runs:
        for s in r.experiment.footprint.services:
            starts.setdefault(s, []).append((r.start, r.experiment.id))
    found = []
    for service, times in sorted(starts.items()):
        times.sort()
        for (t1, a), (t2, b) in pairwise(times):
            if t2 - t1 < policy.cooldown:
                found.append(f"{a} and {b}: two starts on {service} within the cool-down")
    return found


def _concurrency(runs: Sequence[Started], policy: Policy) -> list[str]:
    """At the start of every run (where concurrency peaks), count what runs."""
    found = []
    for r in runs:
        live = [o for o in runs if o.start <= r.start < o.end]
        if policy.max_fleet is not None and len(live) > policy.max_fleet:
            found.append(
                f"{r.start.astimezone(UTC):%F %R}: {len(live)} running, "
                f"fleet limit {policy.max_fleet}"
            )
        if policy.max_per_service is not None:
            for s in sorted(r.experiment.footprint.services):
                on = [o for o in live if s in o.experiment.footprint.services]
                if len(on) > policy.max_per_service:
                    found.append(
                        f"{r.experiment.id}: {len(on)} running on {s}, "
                        f"limit {policy.max_per_service}"
                    )
    return found
