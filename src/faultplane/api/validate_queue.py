"""The queue terms of a request (`not_before`, `not_after`, `priority`, `on_conflict`,
`windows`, `allow_dependent`).

Kept apart from `validate` so that the edge stays the one place that checks them: the
scheduler trusts a `QueueTerms` as given. Times are checked for order only, never
against the clock: a stored request reloaded after its `not_after` must still load (the
scheduler expires it), and a `not_before` in the past simply means "now".
"""

from __future__ import annotations

from faultplane.faults.kind import Problems
from faultplane.model.spec import QueueTerms
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.windows import Window, parse_window
from faultplane.v1 import faultplane_pb2 as pb

ON_CONFLICT = {pb.ON_CONFLICT_REFUSE: "refuse", pb.ON_CONFLICT_QUEUE: "queue"}
MAX_PRIORITY = 1000
MAX_WINDOWS = 16


def queue_terms(request: pb.InjectionRequest, problems: Problems) -> QueueTerms:
    """The request's terms; problems name the field and the reason."""
    on_conflict = ON_CONFLICT.get(request.on_conflict)
    if on_conflict is None:
        problems.add("on_conflict", f"must be refuse or queue, not {request.on_conflict}")
        on_conflict = "refuse"
    if abs(request.priority) > MAX_PRIORITY:
        problems.add(
            "priority",
            f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, not {request.priority}",
        )
    not_before = _seconds(request, "not_before")
    not_after = _seconds(request, "not_after")
    if not_before is not None and not_after is not None and not_after <= not_before:
        problems.add("not_after", "must be later than not_before")
    return QueueTerms(
        on_conflict, request.priority, not_before, not_after, _windows(request, problems),
        request.allow_dependent,
    )  # fmt: skip


def _windows(request: pb.InjectionRequest, problems: Problems) -> tuple[Window, ...]:
    """The request's windows, each checked (weekdays, HH:MM ranges, an IANA zone)."""
    if len(request.windows) > MAX_WINDOWS:
        problems.add("windows", f"at most {MAX_WINDOWS} windows, not {len(request.windows)}")
        return ()
    found = []
    for index, window in enumerate(request.windows):
        data = {"weekdays": window.weekdays, "hours": list(window.hours), "tz": window.tz}
        try:
            found.append(parse_window(data, f"windows[{index}]"))
        except ScheduleError as exc:
            problems.add(exc.field, exc.reason)
    return tuple(found)


def _seconds(request: pb.InjectionRequest, name: str) -> float | None:
    if not request.HasField(name):
        return None
    stamp = getattr(request, name)
    return float(stamp.seconds) + stamp.nanos / 1e9
