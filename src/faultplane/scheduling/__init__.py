"""The experiment scheduler's core: pure logic, no I/O, no server.

windows (when an experiment may run, when none may) -> calendar (can a run start now,
else when) -> rules (why a queued experiment waits) -> packer (which start now, and the
forecast). recurrence says when a schedule's occurrences are; timeline gives the rows of
`faultplane queue`; feed builds footprints from real injection specs (the seam to the
server). Nothing here imports the API, the store or xDS.
"""

from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint, Run, Wait
from faultplane.scheduling.packer import Event, Forecast, Plan, State, apply, forecast, plan
from faultplane.scheduling.recurrence import (
    Cron,
    Every,
    due,
    occurrence_id,
    occurrences,
    parse_recurrence,
)
from faultplane.scheduling.rules import Policy, Situation, conflict, parse_policy, why_waits
from faultplane.scheduling.windows import (
    OneOffBlackout,
    WeeklyBlackout,
    Window,
    parse_blackout,
    parse_windows,
)

__all__ = [
    "Cron",
    "DependencyGraph",
    "Event",
    "Every",
    "Experiment",
    "Footprint",
    "Forecast",
    "OneOffBlackout",
    "Plan",
    "Policy",
    "Run",
    "ScheduleError",
    "Situation",
    "State",
    "Wait",
    "WeeklyBlackout",
    "Window",
    "apply",
    "conflict",
    "due",
    "forecast",
    "occurrence_id",
    "occurrences",
    "parse_blackout",
    "parse_policy",
    "parse_recurrence",
    "parse_windows",
    "plan",
    "why_waits",
]
