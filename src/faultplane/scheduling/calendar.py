"""Can a run of this length start at t, given its windows and the blackouts; if not, when?

A run must fit whole: inside one open span of one of its windows from start to end, and
meeting no blackout, since an experiment that runs into a blackout or past the end of
its window is exactly what they exist to prevent. The earliest start at or after t is
always t itself, the opening of a window span, or the end of a blackout (moving a
feasible start earlier stops at one of those), so only those instants are tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from faultplane.scheduling.clock import show
from faultplane.scheduling.windows import Blackout, Span, Window, covering, merge, reason_outside

# Searched a week (and a day) at a time: every window opens weekly, so the first chunk
# finds a start unless a long one-off blackout is in the way.
_CHUNK = timedelta(days=8)
_SEARCH = timedelta(days=400)
_DST_SLACK = timedelta(hours=1)


@dataclass(frozen=True)
class Fit:
    """The earliest start at or after the instant asked about (None: none within the
    search horizon), and why not at that instant ('' when it can start then)."""

    start: datetime | None
    reason: str


def _blocked_by(blackouts: Sequence[Span], start: datetime, end: datetime) -> Span | None:
    return next((b for b in blackouts if b.start < end and start < b.end), None)


def _in_window(windows: Sequence[Span], start: datetime, end: datetime) -> bool:
    span = covering(windows, start)
    return span is not None and end <= span.end


def _why_not(
    t: datetime, duration: timedelta, windows: tuple[Window, ...], open_spans: Sequence[Span],
    closed: Sequence[Span],
) -> str:  # fmt: skip
    hit = _blocked_by(closed, t, t + duration)
    if hit is not None:
        if hit.start <= t:
            return f"blackout {hit.label} until {show(hit.end)}"
        return f"would run into blackout {hit.label} at {show(hit.start)}"
    if windows:
        span = covering(open_spans, t)
        if span is None:
            return reason_outside(windows)
        return f"would run past the end of window {span.label} at {show(span.end)}"
    return ""


def _never_long_enough(week: Sequence[Span], duration: timedelta) -> bool:
    """A week of a window's spans shows them all (they repeat weekly, up to a DST shift
    of at most an hour), so a run longer than the longest plus an hour never fits."""
    longest = max((s.end - s.start for s in week), default=timedelta(0))
    return longest + _DST_SLACK < duration


@lru_cache(maxsize=65536)
def earliest_fit(
    t: datetime,
    duration: timedelta,
    windows: tuple[Window, ...] = (),
    blackouts: tuple[Blackout, ...] = (),
) -> Fit:
    """The earliest start >= t of a run of `duration` inside `windows` (none: any time)
    and outside every blackout. Pure and cached: the packer asks the same question for
    every queued experiment at every event."""
    chunk_start = t
    reason: str | None = None
    while chunk_start < t + _SEARCH:
        chunk_end = chunk_start + _CHUNK
        horizon = chunk_end + duration
        open_spans = merge(s for w in windows for s in w.spans(chunk_start, horizon))
        closed = merge(s for b in blackouts for s in b.spans(chunk_start, horizon))
        if reason is None:
            reason = _why_not(t, duration, windows, open_spans, closed)
            if windows and _never_long_enough(open_spans, duration):
                return Fit(None, reason)
        candidates = {chunk_start}
        candidates.update(s.start for s in open_spans if chunk_start <= s.start < chunk_end)
        candidates.update(s.end for s in closed if chunk_start <= s.end < chunk_end)
        for start in sorted(candidates):
            end = start + duration
            if (not windows or _in_window(open_spans, start, end)) and _blocked_by(
                closed, start, end
            ) is None:
                return Fit(start, "" if start == t else reason)
        chunk_start = chunk_end
    return Fit(None, reason or "no window long enough")
