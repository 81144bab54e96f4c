"""Windows and blackouts: inside or not, when they open, why not, and their parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from faultplane.scheduling.calendar import earliest_fit
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.windows import (
    inside,
    next_opening,
    parse_blackout,
    parse_window,
    parse_windows,
)


def utc(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# 2026-12-03 is a Thursday; Kolkata is UTC+05:30 all year.
OFFICE = parse_window({"weekdays": "Mon-Fri", "hours": "10:00-16:00", "tz": "Asia/Kolkata"})


def test_window_is_read_in_its_own_zone() -> None:
    assert inside(OFFICE, utc(3, 4, 30))  # 10:00 in Kolkata
    assert not inside(OFFICE, utc(3, 4, 29))
    assert inside(OFFICE, utc(3, 10, 29))  # 15:59 Kolkata
    assert not inside(OFFICE, utc(3, 10, 30))  # 16:00: the end is exclusive


def test_window_is_closed_on_other_weekdays_and_opens_on_monday() -> None:
    saturday_noon = utc(5, 6, 30)
    assert not inside(OFFICE, saturday_noon)
    assert next_opening(OFFICE, saturday_noon) == utc(7, 4, 30)  # Mon 10:00 IST
    assert next_opening(OFFICE, utc(3, 5)) == utc(3, 5)  # open: now


def test_night_range_wraps_midnight_and_belongs_to_the_day_it_starts() -> None:
    night = parse_window({"weekdays": "Fri", "hours": "22:00-02:00", "tz": "UTC"})
    assert inside(night, utc(4, 23))  # Friday night
    assert inside(night, utc(5, 1, 59))  # Saturday small hours: still Friday's range
    assert not inside(night, utc(5, 23))  # Saturday night is not Friday
    assert not inside(night, utc(4, 1))  # Friday small hours belong to Thursday


def test_a_run_may_cross_midnight_inside_two_touching_ranges() -> None:
    evening = parse_window(
        {"weekdays": "Mon-Sun", "hours": ["20:00-24:00", "00:00-04:00"], "tz": "UTC"}
    )
    fit = earliest_fit(utc(3, 23), timedelta(hours=2), (evening,))
    assert fit.start == utc(3, 23)


def test_weekday_range_wraps_the_week() -> None:
    weekend = parse_window({"weekdays": "Sat-Mon", "hours": "00:00-24:00", "tz": "UTC"})
    assert weekend.weekdays == frozenset({5, 6, 0})
    assert inside(weekend, utc(7, 12)) and not inside(weekend, utc(8, 12))


def test_weekly_blackout_wraps_the_week_boundary() -> None:
    weekend = parse_blackout(
        {"name": "weekend", "weekly": "Fri 16:00 - Mon 09:00", "tz": "Europe/Berlin"}
    )
    friday_1530_berlin = utc(4, 14, 30)
    fit = earliest_fit(friday_1530_berlin, timedelta(minutes=30), (), (weekend,))
    assert fit.start == friday_1530_berlin  # ends 16:00 exactly: allowed
    fit = earliest_fit(friday_1530_berlin, timedelta(minutes=31), (), (weekend,))
    assert fit.start == utc(7, 8)  # Mon 09:00 Berlin
    assert fit.reason.startswith("would run into blackout weekend (Fri 16:00 - Mon 09:00")
    sunday = earliest_fit(utc(6, 12), timedelta(minutes=5), (), (weekend,))
    assert sunday.start == utc(7, 8)
    assert sunday.reason == (
        "blackout weekend (Fri 16:00 - Mon 09:00 Europe/Berlin) until 2026-12-07 08:00 UTC"
    )


def test_one_off_blackout_then_window_gives_the_first_start_that_fits_both() -> None:
    settlement = parse_blackout(
        {
            "name": "month-end settlement",
            "start": "2026-12-03T04:00:00+00:00",
            "end": "2026-12-03T09:00:00+00:00",
        }
    )
    fit = earliest_fit(utc(3, 4), timedelta(hours=1), (OFFICE,), (settlement,))
    # 09:00 UTC is 14:30 IST: one hour fits before 16:00 IST.
    assert fit.start == utc(3, 9)
    assert fit.reason.startswith("blackout month-end settlement")
    too_long = earliest_fit(utc(3, 4), timedelta(hours=2), (OFFICE,), (settlement,))
    assert too_long.start == utc(4, 4, 30)  # Friday 10:00 IST


def test_reason_names_the_window_when_outside_or_too_long() -> None:
    outside = earliest_fit(utc(3, 12), timedelta(minutes=10), (OFFICE,))
    assert outside.reason == "outside window Mon-Fri 10:00-16:00 Asia/Kolkata"
    late = earliest_fit(utc(3, 10), timedelta(hours=1), (OFFICE,))
    assert late.reason == (
        "would run past the end of window Mon-Fri 10:00-16:00 Asia/Kolkata at 2026-12-03 10:30 UTC"
    )
    assert earliest_fit(utc(3, 5), timedelta(hours=1), (OFFICE,)).reason == ""


def test_a_run_longer_than_any_window_never_fits() -> None:
    fit = earliest_fit(utc(3, 5), timedelta(hours=7), (OFFICE,))
    assert fit.start is None
    assert "window" in fit.reason


def test_window_follows_its_zone_across_dst() -> None:
    """09:00-10:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer (2026-03-29)."""
    morning = parse_window({"weekdays": "Mon-Sun", "hours": "09:00-10:00", "tz": "Europe/Berlin"})
    assert inside(morning, utc(28, 8, month=3)) and not inside(morning, utc(28, 7, month=3))
    assert inside(morning, utc(30, 7, month=3)) and not inside(morning, utc(30, 8, month=3))


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"weekdays": "Mon-Fri", "hours": "10:00-16:00", "tz": "Mars/Olympus"},
         "windows[0].tz", "unknown time zone 'Mars/Olympus'"),
        ({"weekdays": "Mon-Fry", "hours": "10:00-16:00", "tz": "UTC"},
         "windows[0].weekdays", "unknown weekday 'Fry' (use Mon..Sun)"),
        ({"weekdays": "Mon", "hours": ["10:00-16:00", "25:00-26:00"], "tz": "UTC"},
         "windows[0].hours[1]", "'25:00' is not a time of day"),
        ({"weekdays": "Mon", "hours": "10-16", "tz": "UTC"},
         "windows[0].hours", "expected HH:MM, got '10'"),
        ({"weekdays": "Mon", "tz": "UTC"}, "windows[0].hours", "required"),
        ({"weekdays": "Mon", "hours": "10:00-11:00", "tz": "UTC", "days": 1},
         "windows[0].days", "unknown field (known: hours, tz, weekdays)"),
    ],
)  # fmt: skip
def test_window_errors_name_the_field_and_the_reason(
    data: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_windows([data])
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert str(caught.value) == f"{field}: {reason}"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"name": "x", "start": "2026-12-03T10:00:00", "end": "2026-12-03T11:00:00+00:00"},
         "blackout.start", "2026-12-03T10:00:00 has no time zone"),
        ({"name": "x", "start": "2026-12-03T10:00:00Z", "end": "2026-12-03T09:00:00Z"},
         "blackout.end", "must be after start (2026-12-03 10:00 UTC)"),
        ({"name": "", "weekly": "Fri 16:00 - Mon 09:00", "tz": "UTC"},
         "blackout.name", "a name is required, e.g. 'month-end settlement'"),
        ({"name": "w", "weekly": "Fri 16:00 to Mon 09:00", "tz": "UTC"},
         "blackout.weekly", "expected 'Fri 16:00 - Mon 09:00'"),
        ({"name": "w", "weekly": "Fri 16:00 - Mon 09:00"},
         "blackout.tz", "an IANA time zone name is required, e.g. 'Europe/Berlin'"),
    ],
)  # fmt: skip
def test_blackout_errors_name_the_field_and_the_reason(
    data: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_blackout(data)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_describe_reads_like_the_input() -> None:
    window = parse_window({"weekdays": ["Mon", "Wed", "Fri"], "hours": "22:00-24:00", "tz": "UTC"})
    assert window.describe() == "Mon,Wed,Fri 22:00-24:00 UTC"
