"""The blackouts as the live pages show them: which is in effect now (until when), which
begin within the next hours, and the next instant that answer changes.

ListBlackouts returns each blackout as the operator gave it (weekly + zone, or one-off
start and end); the concrete spans around now come from the scheduler's own calendar
(faultplane.scheduling.windows), so the dashboard and the packer never disagree about
DST or week wrap-around. The event stream sends this state in its snapshot, again at
`changes_at` (a timer, not a poll: a blackout starting or ending is nobody's call), and
again after each INJECTION_EVENT_SCHEDULING (a blackout added or removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.windows import Blackout, parse_blackout
from faultplane.v1 import faultplane_pb2 as pb

HORIZON = timedelta(hours=6)  # "coming up": what the queue page lists ahead
LOOKAHEAD = timedelta(days=8)  # every weekly blackout begins within a week


@dataclass
class BlackoutState:
    """`active`: in effect now (with `ends`); `upcoming`: begin within HORIZON (with
    `starts` and `ends`); `changes_at`: when this answer next changes (None: not within
    LOOKAHEAD), in epoch seconds."""

    active: list[dict[str, Any]] = field(default_factory=list)
    upcoming: list[dict[str, Any]] = field(default_factory=list)
    changes_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"active": self.active, "upcoming": self.upcoming}


def rule_of(message: pb.SchedulingBlackout) -> Blackout | None:
    """The calendar rule behind a listed blackout (None if it no longer parses: the
    server validated it when added, so that would be a newer server's form)."""
    data: dict[str, Any] = {"name": message.name}
    if message.weekly:
        data["weekly"] = message.weekly
        if message.tz:
            data["tz"] = message.tz
    else:
        data["start"] = message.start.ToDatetime(tzinfo=UTC).isoformat()
        data["end"] = message.end.ToDatetime(tzinfo=UTC).isoformat()
    try:
        return parse_blackout(data)
    except ScheduleError:
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def blackout_state(blackouts: list[pb.SchedulingBlackout], now: datetime) -> BlackoutState:
    state = BlackoutState()
    instants: list[datetime] = []
    for message in blackouts:
        rule = rule_of(message)
        if rule is None:
            continue
        for span in rule.spans(now, now + LOOKAHEAD):
            shown = {"id": message.id, "name": message.name, "description": message.description}
            if span.start <= now < span.end:
                state.active.append({**shown, "ends": _iso(span.end)})
                instants.append(span.end)
            elif span.start > now:
                instants.append(span.start)  # it begins
                if span.start - now <= HORIZON:
                    ahead = {"starts": _iso(span.start), "ends": _iso(span.end)}
                    state.upcoming.append({**shown, **ahead})
                else:
                    instants.append(span.start - HORIZON)  # it comes into view
    state.active.sort(key=lambda b: b["ends"])
    state.upcoming.sort(key=lambda b: b["starts"])
    future = [t.timestamp() for t in instants if t > now]
    state.changes_at = min(future) if future else None
    return state


def seconds_until(changes_at: float | None, now: float, cap: float) -> float:
    """How long to wait for the next change, at most `cap` (and never negative)."""
    if changes_at is None or not math.isfinite(changes_at):
        return cap
    return max(0.0, min(cap, changes_at - now))


def next_span_text(message: pb.SchedulingBlackout, now: datetime) -> str:
    """One blackout's place in time for the schedules page: "in effect until …",
    "next begins …", or "over" (a one-off that ended)."""
    rule = rule_of(message)
    spans = rule.spans(now, now + LOOKAHEAD) if rule else []
    if not spans:
        return "over" if message.HasField("end") else "—"
    first = spans[0]
    stamp = "%Y-%m-%d %H:%M UTC"
    if first.start <= now:
        return f"in effect until {first.end.astimezone(UTC):{stamp}}"
    return f"next begins {first.start.astimezone(UTC):{stamp}}"
