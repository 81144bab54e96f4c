"""The dashboard's blackout state (faultplane.web.calendar): what is in effect, what
begins within the horizon, and the next instant the answer changes (when the event
stream's timer fires), across a week's wrap-around and a DST change."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.calendar import blackout_state, next_span_text, seconds_until

WEEKEND = pb.SchedulingBlackout(
    id="blk-w", name="weekend", weekly="Sat 00:00 - Mon 00:00", tz="UTC"
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stamp(text: str) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(at(text))
    return message


def test_in_effect_it_is_named_with_its_end_and_the_end_is_the_next_change() -> None:
    state = blackout_state([WEEKEND], at("2026-12-06T12:00:00"))  # a Sunday
    assert [(b["name"], b["ends"]) for b in state.active] == [("weekend", "2026-12-07T00:00:00Z")]
    assert state.upcoming == []
    assert state.changes_at == at("2026-12-07T00:00:00").timestamp()


def test_ahead_within_the_horizon_it_is_listed_and_its_start_is_the_next_change() -> None:
    state = blackout_state([WEEKEND], at("2026-12-04T20:00:00"))  # Friday evening
    assert state.active == []
    assert [(b["starts"], b["ends"]) for b in state.upcoming] == [
        ("2026-12-05T00:00:00Z", "2026-12-07T00:00:00Z")
    ]
    assert state.changes_at == at("2026-12-05T00:00:00").timestamp()


def test_beyond_the_horizon_the_next_change_is_when_it_comes_into_view() -> None:
    state = blackout_state([WEEKEND], at("2026-12-04T12:00:00"))
    assert state.active == [] and state.upcoming == []
    assert state.changes_at == at("2026-12-04T18:00:00").timestamp()  # 6 h before


def test_a_weekly_blackout_across_the_autumn_dst_change_ends_at_local_time() -> None:
    night = pb.SchedulingBlackout(
        id="blk-n", name="batch", weekly="Sun 01:00 - Sun 04:00", tz="Europe/Berlin"
    )
    # 25 Oct 2026: 03:00 CEST becomes 02:00 CET; 04:00 CET is 03:00 UTC.
    state = blackout_state([night], at("2026-10-25T02:30:00"))
    assert [b["ends"] for b in state.active] == ["2026-10-25T03:00:00Z"]


def test_a_past_one_off_is_over_and_changes_nothing() -> None:
    old = pb.SchedulingBlackout(
        id="blk-o", name="old", start=stamp("2026-01-01T00:00:00"), end=stamp("2026-01-02T00:00:00")
    )
    now = at("2026-12-04T12:00:00")
    state = blackout_state([old], now)
    assert state.active == [] and state.upcoming == [] and state.changes_at is None
    assert next_span_text(old, now) == "over"
    assert next_span_text(WEEKEND, now) == "next begins 2026-12-05 00:00 UTC"
    assert seconds_until(None, 0.0, 15.0) == 15.0 and seconds_until(5.0, 10.0, 15.0) == 0.0
