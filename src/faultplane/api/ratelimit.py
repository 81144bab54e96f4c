"""A limit on refused calls, per caller, so refusals cannot flood the audit log.

Every refused call is audited. Without a limit, anyone who can reach the operator API
(no token needed) could grow the store and the log as fast as they can send. So each
caller — an authenticated principal, or else the peer's host — may be refused `limit`
times per fixed window of `window` seconds, each refusal audited; past that, its further
refusals in the window are answered RESOURCE_EXHAUSTED with a retry hint and only
counted. When the window ends, one summary says how many were suppressed. Accepted calls
never pass through here: nothing an operator is allowed to do is ever rate limited.

The class is pure (the caller passes the time, a monotonic clock) and its memory is
bounded: at most `max_callers` windows are tracked; past that the oldest window is
closed early (its summary is still reported), so many distinct callers cost memory in
proportion to the cap, not to their number.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

DEFAULT_LIMIT = 20
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_CALLERS = 4096


@dataclass
class _Window:
    started: float
    refused: int = 0  # audited one by one
    suppressed: int = 0  # answered RESOURCE_EXHAUSTED, counted only
    methods: Counter[str] = field(default_factory=Counter)  # of the suppressed calls


@dataclass(frozen=True)
class Decision:
    """What to do with one refused call: audit it, or (limited) answer RESOURCE_EXHAUSTED
    and retry_after seconds from now the caller's window ends."""

    limited: bool
    retry_after: float = 0.0

    @property
    def retry_after_seconds(self) -> int:
        """The hint as whole seconds, rounded up (never 0: "retry after 0s" invites a spin)."""
        return max(1, math.ceil(self.retry_after))


@dataclass(frozen=True)
class Summary:
    """One window of one caller in which refusals were suppressed: one audit entry."""

    caller: str
    started: float  # on the limiter's (monotonic) clock
    ended: float  # when the window closed: its end, or earlier if closed early
    refused: int
    suppressed: int
    methods: dict[str, int]


class RefusalLimiter:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW_SECONDS,
        max_callers: int = DEFAULT_MAX_CALLERS,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, not {limit}")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window: must be a positive number of seconds, not {window!r}")
        if max_callers < 1:
            raise ValueError(f"max_callers: must be at least 1, not {max_callers}")
        self.limit = limit
        self.window = window
        self.max_callers = max_callers
        # Ordered by window start (a new window moves to the end), so the windows that
        # end first are always at the front: closing them costs only what is closed.
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._closed: list[Summary] = []

    def __len__(self) -> int:
        """How many callers' windows are tracked (at most max_callers)."""
        return len(self._windows)

    def refuse(self, caller: str, method: str, now: float) -> Decision:
        """Count one refused call of `caller`; say whether it is over the limit."""
        self._close_ended(now)
        window = self._windows.get(caller)
        if window is None:
            while len(self._windows) >= self.max_callers:
                oldest, evicted = self._windows.popitem(last=False)
                self._report(oldest, evicted, now)
            window = self._windows[caller] = _Window(started=now)
        if window.refused < self.limit:
            window.refused += 1
            return Decision(limited=False)
        window.suppressed += 1
        window.methods[method] += 1
        return Decision(limited=True, retry_after=window.started + self.window - now)

    def due(self, now: float) -> list[Summary]:
        """Summaries of every window that has ended (or was closed early) since the last
        call: each is returned once."""
        self._close_ended(now)
        closed, self._closed = self._closed, []
        return closed

    def flush(self, now: float) -> list[Summary]:
        """Close every window now (shutdown): nothing suppressed goes unreported."""
        while self._windows:
            caller, window = self._windows.popitem(last=False)
            self._report(caller, window, now)
        return self.due(now)

    def _close_ended(self, now: float) -> None:
        while self._windows:
            caller, window = next(iter(self._windows.items()))
            end = window.started + self.window
            if end > now:
                return
            del self._windows[caller]
            self._report(caller, window, end)

    def _report(self, caller: str, window: _Window, ended: float) -> None:
        if window.suppressed:
            self._closed.append(
                Summary(
                    caller,
                    window.started,
                    ended,
                    window.refused,
                    window.suppressed,
                    dict(sorted(window.methods.items())),
                )
            )
