"""Recurring experiments: wall-clock occurrences across DST, intervals, and parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.recurrence import (
    Cron,
    Every,
    due,
    occurrence_id,
    occurrences,
    parse_recurrence,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 26, 12, tzinfo=UTC)  # Thursday before Europe's spring change


def local_times(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [f"{t.astimezone(zone):%a %H:%M}" for t in times]


def test_cron_11_local_stays_11_local_across_the_spring_change() -> None:
    rule = parse_recurrence({"cron": "0 11 * * 1-5", "tz": "Europe/Berlin"}, NOW)
    times = list(occurrences(rule, NOW, NOW + timedelta(days=6)))
    assert local_times(times, BERLIN) == ["Fri 11:00", "Mon 11:00", "Tue 11:00", "Wed 11:00"]
    # The UTC instant moves by the hour the clocks moved (Sunday 2026-03-29).
    assert [t.hour for t in times] == [10, 9, 9, 9]
    assert all(t.tzinfo == UTC for t in times)


def test_cron_11_local_stays_11_local_across_the_autumn_change_in_new_york() -> None:
    start = datetime(2026, 10, 30, 12, tzinfo=UTC)  # Friday; clocks go back Sun 11-01
    rule = Cron("0 11 * * *", NEW_YORK)
    times = list(occurrences(rule, start, start + timedelta(days=4)))
    assert local_times(times, NEW_YORK) == ["Fri 11:00", "Sat 11:00", "Sun 11:00", "Mon 11:00"]
    assert [t.hour for t in times] == [15, 15, 16, 16]


def test_a_wall_time_repeated_by_the_clocks_going_back_fires_once() -> None:
    start = datetime(2026, 10, 24, 12, tzinfo=UTC)  # Berlin goes back Sun 10-25 03:00
    times = list(occurrences(Cron("30 2 * * *", BERLIN), start, start + timedelta(days=2)))
    assert local_times(times, BERLIN) == ["Sun 02:30", "Mon 02:30"]
    assert times[0] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (CEST)


def test_every_day_keeps_the_local_wall_time_across_dst() -> None:
    anchor = datetime(2026, 3, 27, 10, tzinfo=UTC)  # 11:00 CET
    rule = Every(timedelta(days=1), anchor, BERLIN)
    times = list(occurrences(rule, anchor - timedelta(seconds=1), anchor + timedelta(days=3)))
    assert local_times(times, BERLIN) == ["Fri 11:00", "Sat 11:00", "Sun 11:00", "Mon 11:00"]
    assert times[-1] - times[0] == timedelta(days=3, hours=-1)  # one hour shorter


def test_every_hour_steps_in_absolute_time_across_dst() -> None:
    anchor = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET, before the gap
    rule = Every(timedelta(hours=1), anchor, BERLIN)
    times = list(occurrences(rule, anchor, anchor + timedelta(hours=2)))
    assert times == [anchor + timedelta(hours=1), anchor + timedelta(hours=2)]
    assert local_times(times, BERLIN) == ["Sun 03:30", "Sun 04:30"]  # 02:30 never existed


def test_next_after_is_strictly_after() -> None:
    anchor = datetime(2026, 12, 3, 11, tzinfo=UTC)
    rule = parse_recurrence({"every": "1d", "start": anchor.isoformat()}, NOW)
    assert rule.next_after(anchor - timedelta(days=5)) == anchor
    assert rule.next_after(anchor) == anchor + timedelta(days=1)
    every_30m = Every(timedelta(minutes=30), anchor, ZoneInfo("UTC"))
    assert every_30m.next_after(anchor) == anchor + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"cron": "0 11 * *"}, "schedule.cron",
         "expected five fields (m h dom mon dow), got '0 11 * *'"),
        ({"cron": "0 25 * * *"}, "schedule.cron", "'0 25 * * *' is not a valid cron expression"),
        ({"every": "1x"}, "schedule.every",
         "expected a number and a unit (s, m, h, d, w), got '1x'"),
        ({"every": "0h"}, "schedule.every", "must be positive, got '0h'"),
        ({"every": "1d", "cron": "0 11 * * *"}, "schedule", "give exactly one of every or cron"),
        ({"cron": "0 11 * * *", "tz": "Asia/Kolkatta"}, "schedule.tz",
         "unknown time zone 'Asia/Kolkatta'"),
        ({"cron": "0 11 * * *", "start": "2026-12-03T00:00:00Z"}, "schedule.start",
         "only with every (a cron expression has no start)"),
    ],
)  # fmt: skip
def test_recurrence_errors_name_the_field_and_the_reason(
    data: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_recurrence(data, NOW)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_due_occurrences_resume_after_the_last_enqueued_with_stable_ids() -> None:
    rule = Cron("0 * * * *", ZoneInfo("UTC"))  # hourly
    now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    fresh = due(rule, None, now, timedelta(hours=2))
    assert fresh == [datetime(2026, 12, 3, h, tzinfo=UTC) for h in (11, 12)]
    # down from 08:10 until 10:30: the missed 09:00 and 10:00 come back, 08:00 does not
    after_restart = due(rule, datetime(2026, 12, 3, 8, tzinfo=UTC), now, timedelta(hours=1))
    assert [t.hour for t in after_restart] == [9, 10, 11]
    assert occurrence_id("sch-1", after_restart[0]) == "sch-1-20261203T0900Z"
    assert occurrence_id("sch-1", after_restart[0].astimezone(BERLIN)) == "sch-1-20261203T0900Z"
