"""Small time helpers every scheduling module shares: aware datetimes only, one format.

The scheduler compares instants from different zones (a window in Asia/Kolkata, a
blackout in Europe/Berlin, the server clock in UTC); a naive datetime would silently be
read as local time, so every entry point insists on aware ones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faultplane.scheduling.errors import ScheduleError

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def aware(t: datetime, field: str = "time") -> datetime:
    """`t` in UTC; a naive datetime is an error (which zone would it be in?)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ScheduleError(field, f"{t.isoformat()} has no time zone")
    return t.astimezone(UTC)


def at_local(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time on a local date.

    A wall time that does not exist (skipped by a DST change) is read with the offset
    before the change, so it lands just after the gap (PEP 495, fold=0); one that occurs
    twice is the first of the two.
    """
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def zone_of(name: object, field: str) -> ZoneInfo:
    """An IANA zone by name, or an error naming the field."""
    if not isinstance(name, str) or not name:
        raise ScheduleError(field, "an IANA time zone name is required, e.g. 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(field, f"unknown time zone {name!r}") from None


def wall_time(text: object, field: str) -> time:
    """`HH:MM` (24:00 means the midnight that ends the day and is read as 00:00)."""
    if not isinstance(text, str):
        raise ScheduleError(field, f"expected HH:MM, got {text!r}")
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ScheduleError(field, f"expected HH:MM, got {text!r}")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return time(0, 0)
    if h > 23 or m > 59:
        raise ScheduleError(field, f"{text!r} is not a time of day")
    return time(h, m)


def weekday(text: object, field: str) -> int:
    """Mon..Sun or the full name, any case -> 0..6."""
    if isinstance(text, str):
        word = text.strip().lower()
        for index, (short, full) in enumerate(zip(WEEKDAYS, _FULL_DAYS, strict=True)):
            if word in (short.lower(), full):
                return index
    raise ScheduleError(field, f"unknown weekday {text!r} (use Mon..Sun)")


def instant(text: object, field: str) -> datetime:
    """An ISO 8601 instant with an offset, e.g. 2026-12-31T18:00:00+00:00."""
    if isinstance(text, datetime):
        return aware(text, field)
    if not isinstance(text, str):
        raise ScheduleError(field, f"expected an ISO 8601 time, got {text!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(field, f"{text!r} is not an ISO 8601 time") from None
    return aware(parsed, field)


def show(t: datetime) -> str:
    """How a reason prints an instant: UTC, to the minute."""
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: object, field: str) -> timedelta:
    """'90s', '30m', '1h', '1d', '2w' (one number, one unit) -> a positive timedelta."""
    if isinstance(text, timedelta):
        value = text
    else:
        word = str(text).strip().lower()
        number, unit = word[:-1], word[-1:]
        if unit not in _UNITS or not number.isdigit():
            raise ScheduleError(
                field, f"expected a number and a unit (s, m, h, d, w), got {text!r}"
            )
        value = timedelta(seconds=int(number) * _UNITS[unit])
    if value <= timedelta(0):
        raise ScheduleError(field, f"must be positive, got {text!r}")
    return value
