"""The watch's event kinds beyond transitions: the guard's readings and the freeze.

The scheduler publishes each transition, each reading the guard records and each freeze
change (set, lifted, or run out) to an `EventHub`; a subscriber names the kinds it wants
(`WatchInjections` with `kinds`, the dashboard, the notifier) and is offered only those,
in the order they happened. Nobody has to poll the scheduler's memory for a reading or a
freeze any more. The plain transition watch (`Scheduler.watch`) is unchanged.

A freeze with an `until` ends on its own: the hub sets a timer for that instant and
publishes the lapse then, once, unless the freeze was replaced or lifted before.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, MutableSet
from dataclasses import dataclass
from typing import Any

from faultplane.lifecycle.approval import Freeze
from faultplane.lifecycle.watch import DEFAULT_MAX_BACKLOG, Watch, WatchHub
from faultplane.model.injection import Injection, SloReading, Transition

TRANSITION, READING, FREEZE = "transition", "reading", "freeze"
SCHEDULING = "scheduling"
KINDS = frozenset({TRANSITION, READING, FREEZE, SCHEDULING})


@dataclass(frozen=True)
class ReadingEvent:
    """One reading of the steady-state guard, as it recorded it for `injection_id`."""

    injection_id: str
    slo: str
    reading: SloReading


@dataclass(frozen=True)
class FreezeEvent:
    """The freeze as it is now (`freeze` None: none is in force); `lapsed` when it ended
    because its `until` passed; `previous`: the freeze this one replaced or ended."""

    freeze: Freeze | None
    previous: Freeze | None = None
    lapsed: bool = False


@dataclass(frozen=True)
class SchedulingEvent:
    """The scheduler's calendar changed (`what`: "blackouts", "policy", "schedules"):
    watchers that show it (the dashboard) re-read it through the API, as the caller."""

    what: str


TransitionEvent = tuple[Injection, Transition]
Event = TransitionEvent | ReadingEvent | FreezeEvent | SchedulingEvent


def kind_of(event: Event) -> str:
    if isinstance(event, ReadingEvent):
        return READING
    if isinstance(event, FreezeEvent):
        return FREEZE
    if isinstance(event, SchedulingEvent):
        return SCHEDULING
    return TRANSITION


class KindWatch(Watch):
    """A `Watch` offered only the kinds it subscribed to (others never fill its backlog)."""

    def __init__(
        self, subscribers: MutableSet[Any], kinds: Collection[str], max_backlog: int
    ) -> None:
        unknown = set(kinds) - KINDS
        if unknown or not kinds:
            raise ValueError(f"kinds: expected some of {sorted(KINDS)}, got {sorted(kinds)}")
        self.kinds = frozenset(kinds)
        super().__init__(subscribers, max_backlog)

    def offer(self, item: Any) -> None:
        if kind_of(item) in self.kinds:
            super().offer(item)


class EventHub(WatchHub):
    """Every event kind, to subscribers that each name theirs."""

    def __init__(self, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        super().__init__(max_backlog)
        self._lapse: asyncio.TimerHandle | None = None

    def subscribe_kinds(self, kinds: Collection[str]) -> KindWatch:
        """Every event of these kinds from now on; subscribed before this returns."""
        return KindWatch(self._subscribers, kinds, self._max_backlog)

    def freeze_changed(self, freeze: Freeze | None, previous: Freeze | None, now: float) -> None:
        """A freeze was set (or replaced), or lifted: publish it and time its lapse."""
        self.publish(FreezeEvent(freeze, previous))
        self.time_lapse(freeze, now)

    def time_lapse(self, freeze: Freeze | None, now: float) -> None:
        """Publish the lapse of `freeze` at its `until` (a restart calls this for the
        freeze it reloads, which is not news itself)."""
        self.close()
        if freeze is None or freeze.until is None:
            return
        delay = freeze.until - now
        if not math.isfinite(delay):  # a stored freeze from before `until` was bounded:
            return  # in effect until lifted, and lifting it is told
        lapse = FreezeEvent(None, freeze, lapsed=True)
        loop = asyncio.get_running_loop()
        self._lapse = loop.call_later(max(0.0, delay), self.publish, lapse)

    def close(self) -> None:
        """Cancel the lapse timer (the freeze changed, or the scheduler closes)."""
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
