"""Recurring experiments: `--every 1d` and `--cron "0 11 * * 1-5" --tz Asia/Kolkata`.

Each occurrence becomes a queued experiment of its own; this module only says when the
occurrences are. People mean wall-clock time: a daily 11:00 job in Europe/Berlin stays at
11:00 local when the clocks change, so whole-day periods and cron expressions step in
the schedule's zone, while shorter periods (every 30m) step in absolute time. On the
night the clocks go back, a wall time that occurs twice fires once (the first), as
Vixie cron does; a wall time skipped by the clocks going forward fires just after the
gap (croniter's reading).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from faultplane.scheduling.clock import at_local, aware, duration, instant, show, zone_of
from faultplane.scheduling.errors import ScheduleError

_DAY = timedelta(days=1)
# Cron is iterated from this far before the asked instant's wall time, so a wall time
# the clocks going back repeat is never missed.
_DST_MARGIN = timedelta(hours=3)


def _period_text(period: timedelta) -> str:
    """The largest unit that divides it: 1d, 12h, 90m, 45s."""
    seconds = int(period.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Every:
    """Every `period` from `anchor` (the first occurrence); whole days in `zone`."""

    period: timedelta
    anchor: datetime
    zone: ZoneInfo

    def describe(self) -> str:
        """'every 1d from 2026-12-03 09:00 UTC (Europe/Berlin)'."""
        return f"every {_period_text(self.period)} from {show(self.anchor)} ({self.zone.key})"

    def next_after(self, t: datetime) -> datetime:
        t = aware(t)
        if self.period % _DAY:
            if t < self.anchor:
                return self.anchor
            steps = (t - self.anchor) // self.period + 1
            return self.anchor + steps * self.period
        days = self.period // _DAY
        local = self.anchor.astimezone(self.zone)
        first, wall = local.date(), local.time()
        k = max(0, (t.astimezone(self.zone).date() - first).days // days - 1)
        while True:
            candidate = at_local(first + timedelta(days=k * days), wall, self.zone)
            if candidate > t:
                return candidate
            k += 1


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression read in `zone`."""

    expression: str
    zone: ZoneInfo

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.zone.key})"

    def next_after(self, t: datetime) -> datetime:
        """Iterated on naive local wall times (croniter's own zone arithmetic differs
        across its versions at DST changes), each read as at_local reads a wall time:
        a skipped one lands just after the gap, a repeated one is its first instant."""
        t = aware(t)
        wall = t.astimezone(self.zone).replace(tzinfo=None) - _DST_MARGIN
        times = croniter(self.expression, wall)
        while True:
            found: datetime = times.get_next(datetime)
            candidate = at_local(found.date(), found.time(), self.zone)
            if candidate > t:
                return candidate


Recurrence = Every | Cron


def occurrences(rule: Recurrence, after: datetime, until: datetime) -> Iterator[datetime]:
    """Every occurrence in (after, until], in order."""
    t = rule.next_after(after)
    while t <= until:
        yield t
        t = rule.next_after(t)


def parse_recurrence(data: Mapping[str, Any], now: datetime, where: str = "schedule") -> Recurrence:
    """{"every": "1d", "start": ISO?, "tz": ...} or {"cron": "0 11 * * 1-5", "tz": ...}.

    `every` starts at `start` (default: now); `tz` (default UTC) is the zone whole days
    and cron fields are counted in."""
    has_every, has_cron = "every" in data, "cron" in data
    if has_every == has_cron:
        raise ScheduleError(where, "give exactly one of every or cron")
    unknown = sorted(set(data) - {"every", "cron", "tz", "start"})
    if unknown:
        raise ScheduleError(
            f"{where}.{unknown[0]}", "unknown field (known: cron, every, start, tz)"
        )
    zone = zone_of(data.get("tz", "UTC"), f"{where}.tz")
    if has_every:
        period = duration(data["every"], f"{where}.every")
        start = instant(data["start"], f"{where}.start") if "start" in data else aware(now)
        return Every(period, start, zone)
    if "start" in data:
        raise ScheduleError(f"{where}.start", "only with every (a cron expression has no start)")
    expression = data["cron"]
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise ScheduleError(
            f"{where}.cron", f"expected five fields (m h dom mon dow), got {expression!r}"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{where}.cron", f"{expression!r} is not a valid cron expression")
    return Cron(expression, zone)


def occurrence_id(schedule_id: str, at: datetime) -> str:
    """'sch-3f2a-20261203T0530Z': the same for the same occurrence after a restart, so
    enqueuing one twice is refused by the store's key instead of running it twice."""
    return f"{schedule_id}-{aware(at):%Y%m%dT%H%MZ}"


def due(rule: Recurrence, last: datetime | None, now: datetime, ahead: timedelta) -> list[datetime]:
    """The occurrences to enqueue at `now`: those after the last one enqueued (`last`;
    None: a new schedule, from now) up to `now + ahead`, so the queue's timeline shows
    them beforehand. Ones missed while the server was down are included; each is queued
    with its own deadline, so one missed by too much expires instead of running late."""
    after = aware(now) if last is None else aware(last)
    return list(occurrences(rule, after, aware(now) + ahead))
