"""The rows of `faultplane queue`: what runs, what starts when, what expires, what waits.

One row per experiment, derived from a forecast, so the CLI (and a future dashboard
panel) only prints: running ones with their planned end, queued ones with the start the
forecast gives them and, until then, why they wait now; ones that would expire, and ones
that still wait at the horizon with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from faultplane.scheduling.packer import Forecast, State, plan
from faultplane.scheduling.rules import Policy


@dataclass(frozen=True)
class Row:
    """status: running | starts | expires | waits (still waiting at the horizon)."""

    experiment: str
    status: str
    start: datetime | None
    end: datetime | None
    reason: str  # why it waits now ('' if it runs or starts now)


def rows(state: State, policy: Policy, future: Forecast) -> list[Row]:
    """The timeline of `future` (a forecast from `state`), ordered by start time, then
    expiries, then what still waits."""
    now = plan(state, policy)
    waits_now = {e.id: w.reason for e, w in now.waiting}
    waits_now.update((e.id, why) for e, why in now.expire)
    durations = {e.id: e.duration for e in state.queue}
    out = [Row(r.id, "running", r.started_at, r.ends_at, "") for r in state.running]
    for event in future.events:
        if event.kind == "start":
            end = event.at + durations[event.experiment]
            reason = waits_now.get(event.experiment, "")
            out.append(Row(event.experiment, "starts", event.at, end, reason))
        elif event.kind == "expire":
            out.append(Row(event.experiment, "expires", None, event.at, event.reason))
    out += [Row(e.id, "waits", None, None, w.reason) for e, w in future.waiting]
    order = {"running": 0, "starts": 0, "expires": 1, "waits": 2}
    return sorted(out, key=lambda r: (order[r.status], r.start or r.end or state.now, r.experiment))
