"""When experiments may run: per-experiment windows and server-wide blackouts.

A window says when an experiment is welcome ("Mon-Fri 10:00-16:00 Asia/Kolkata": the
team is at their desks); a blackout says when none is ("Fri 16:00 - Mon 09:00",
"month-end settlement"). Both are calendars in a local zone, so every question is
answered by turning them into concrete UTC spans around the instant asked about: DST
changes, week wrap-around and midnight wrap-around are then handled once, in `spans`,
and every query (inside? next opening? until when?) is a scan over a few spans.
The freeze is not here: it is the instant switch, not a calendar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from faultplane.scheduling.clock import (
    WEEKDAYS,
    at_local,
    aware,
    instant,
    show,
    wall_time,
    weekday,
    zone_of,
)
from faultplane.scheduling.errors import ScheduleError

_DAY = timedelta(days=1)


class Span(NamedTuple):
    """A concrete stretch of time [start, end) in UTC, and what it came from."""

    start: datetime
    end: datetime
    label: str


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, with touching or overlapping spans joined (22:00-24:00 then 00:00-02:00
    is one evening, so a run may cross midnight inside it)."""
    merged: list[Span] = []
    for span in sorted(spans):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.label)
        else:
            merged.append(span)
    return merged


@dataclass(frozen=True)
class TimeRange:
    """A stretch of a local day; `end <= start` runs past midnight into the next day
    (22:00-02:00), and `end == start` is the whole day."""

    start: time
    end: time

    def text(self) -> str:
        end = "24:00" if self.end == time(0) and self.start != time(0) else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"


def _days_text(days: frozenset[int]) -> str:
    """{0,1,2,3,4} -> 'Mon-Fri'; {0,2} -> 'Mon,Wed'."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = [WEEKDAYS[r[0]] if len(r) == 1 else f"{WEEKDAYS[r[0]]}-{WEEKDAYS[r[-1]]}" for r in runs]
    return ",".join(parts)


@dataclass(frozen=True)
class Window:
    """When one experiment may run: these weekdays, these local time ranges, this zone.

    A range belongs to the weekday it starts on (Fri 22:00-02:00 ends on Saturday)."""

    weekdays: frozenset[int]
    ranges: tuple[TimeRange, ...]
    zone: ZoneInfo

    def describe(self) -> str:
        hours = ",".join(r.text() for r in self.ranges)
        return f"{_days_text(self.weekdays)} {hours} {self.zone.key}"

    def spans(self, start: datetime, end: datetime) -> list[Span]:
        """The open spans that meet [start, end), merged across midnight."""
        label = self.describe()
        first = start.astimezone(self.zone).date() - _DAY
        last = end.astimezone(self.zone).date() + _DAY
        found: list[Span] = []
        day = first
        while day <= last:
            if day.weekday() in self.weekdays:
                for r in self.ranges:
                    ends_on = day + _DAY if r.end <= r.start else day
                    found.append(
                        Span(
                            at_local(day, r.start, self.zone),
                            at_local(ends_on, r.end, self.zone),
                            label,
                        )
                    )
            day += _DAY
        return [s for s in merge(found) if s.end > start and s.start < end]


@dataclass(frozen=True)
class OneOffBlackout:
    """No experiment runs in [start, end), e.g. month-end settlement."""

    name: str
    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"{self.name} ({show(self.start)} - {show(self.end)})"

    def spans(self, start: datetime, end: datetime) -> list[Span]:
        if self.end > start and self.start < end:
            return [Span(self.start, self.end, self.describe())]
        return []


@dataclass(frozen=True)
class WeeklyBlackout:
    """No experiment runs from one weekday and time to the next matching weekday and time
    in a zone, every week, e.g. Fri 16:00 - Mon 09:00 (it wraps the week boundary)."""

    name: str
    start_day: int
    start_time: time
    end_day: int
    end_time: time
    zone: ZoneInfo

    def describe(self) -> str:
        return (
            f"{self.name} ({WEEKDAYS[self.start_day]} {self.start_time:%H:%M} - "
            f"{WEEKDAYS[self.end_day]} {self.end_time:%H:%M} {self.zone.key})"
        )

    def spans(self, start: datetime, end: datetime) -> list[Span]:
        label = self.describe()
        ahead = (self.end_day - self.start_day) % 7
        if ahead == 0 and self.end_time <= self.start_time:
            ahead = 7
        day = start.astimezone(self.zone).date() - timedelta(days=8)
        last = end.astimezone(self.zone).date() + _DAY
        found: list[Span] = []
        while day <= last:
            if day.weekday() == self.start_day:
                opens = at_local(day, self.start_time, self.zone)
                closes = at_local(day + timedelta(days=ahead), self.end_time, self.zone)
                if closes > start and opens < end:
                    found.append(Span(opens, closes, label))
            day += _DAY
        return found


Blackout = OneOffBlackout | WeeklyBlackout


def covering(spans: Sequence[Span], t: datetime) -> Span | None:
    """The span that contains t, if any."""
    return next((s for s in spans if s.start <= t < s.end), None)


def inside(window: Window, t: datetime) -> bool:
    """Is t inside the window?"""
    t = aware(t)
    return covering(window.spans(t, t + timedelta(seconds=1)), t) is not None


def next_opening(window: Window, t: datetime) -> datetime:
    """t itself when the window is open, else the next instant it opens (within a week
    and a day: every window opens at least once a week)."""
    t = aware(t)
    spans = window.spans(t, t + timedelta(days=8))
    return max(spans[0].start, t)


def reason_outside(windows: Sequence[Window]) -> str:
    """'outside window Mon-Fri 10:00-16:00 Asia/Kolkata' (each window, joined by 'or')."""
    return "outside window " + " or ".join(w.describe() for w in windows)


# --- parsing: dict input (API requests, the blackout store) -> the frozen forms above.


def _known(data: object, keys: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ScheduleError(where, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ScheduleError(
            f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(keys))})"
        )
    return data


def _weekdays(value: object, field: str) -> frozenset[int]:
    """'Mon-Fri', 'Sat', 'Mon,Wed,Fri' or a list of those; 'Fri-Mon' wraps the week."""
    items = value if isinstance(value, list) else str(value).split(",") if value else []
    days: set[int] = set()
    for item in items:
        first, dash, last = str(item).partition("-")
        a = weekday(first, field)
        b = weekday(last, field) if dash else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if not days:
        raise ScheduleError(field, "at least one weekday is required, e.g. 'Mon-Fri'")
    return frozenset(days)


def _ranges(value: object, field: str) -> tuple[TimeRange, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScheduleError(field, "at least one time range is required, e.g. '10:00-16:00'")
    ranges = []
    for index, item in enumerate(items):
        where = f"{field}[{index}]" if isinstance(value, list) else field
        start, dash, end = str(item).partition("-")
        if not dash:
            raise ScheduleError(where, f"expected HH:MM-HH:MM, got {item!r}")
        ranges.append(TimeRange(wall_time(start, where), wall_time(end, where)))
    return tuple(ranges)


def parse_window(data: object, where: str = "window") -> Window:
    """{"weekdays": "Mon-Fri", "hours": "10:00-16:00" | [...], "tz": "Asia/Kolkata"}."""
    fields = _known(data, {"weekdays", "hours", "tz"}, where)
    for name in ("weekdays", "hours", "tz"):
        if name not in fields:
            raise ScheduleError(f"{where}.{name}", "required")
    return Window(
        _weekdays(fields["weekdays"], f"{where}.weekdays"),
        _ranges(fields["hours"], f"{where}.hours"),
        zone_of(fields["tz"], f"{where}.tz"),
    )


def parse_windows(data: object, where: str = "windows") -> tuple[Window, ...]:
    """A list of windows (an experiment may run in any of them); empty: any time."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ScheduleError(where, "expected a list of windows")
    return tuple(parse_window(item, f"{where}[{i}]") for i, item in enumerate(data))


def _day_time(text: object, field: str) -> tuple[int, time]:
    """'Fri 16:00' -> (4, 16:00)."""
    day, _, clock = str(text).strip().partition(" ")
    if not clock:
        raise ScheduleError(field, f"expected 'Ddd HH:MM', e.g. 'Fri 16:00', got {text!r}")
    return weekday(day, field), wall_time(clock.strip(), field)


def parse_blackout(data: object, where: str = "blackout") -> Blackout:
    """{"name", "start", "end"} (one-off, ISO 8601 with offset) or
    {"name", "weekly": "Fri 16:00 - Mon 09:00", "tz"} (every week)."""
    fields = _known(data, {"name", "start", "end", "weekly", "tz"}, where)
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"{where}.name", "a name is required, e.g. 'month-end settlement'")
    if "weekly" in fields:
        if "start" in fields or "end" in fields:
            raise ScheduleError(f"{where}.weekly", "give either weekly or start/end, not both")
        first, dash, last = str(fields["weekly"]).partition(" - ")
        if not dash:
            raise ScheduleError(f"{where}.weekly", "expected 'Fri 16:00 - Mon 09:00'")
        start_day, start_time = _day_time(first, f"{where}.weekly")
        end_day, end_time = _day_time(last, f"{where}.weekly")
        zone = zone_of(fields.get("tz"), f"{where}.tz")
        return WeeklyBlackout(name.strip(), start_day, start_time, end_day, end_time, zone)
    for key in ("start", "end"):
        if key not in fields:
            raise ScheduleError(f"{where}.{key}", "required (or give weekly)")
    start = instant(fields["start"], f"{where}.start")
    end = instant(fields["end"], f"{where}.end")
    if end <= start:
        raise ScheduleError(f"{where}.end", f"must be after start ({show(start)})")
    return OneOffBlackout(name.strip(), start, end)
