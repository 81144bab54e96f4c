"""Subscriptions to injection state changes (WatchInjections, the demo, the CLI).

The scheduler publishes every transition to a `WatchHub`; each subscriber reads its own
`Watch`. A subscriber's backlog is bounded: one that falls `max_backlog` events behind
(a WatchInjections client that stopped reading) is dropped, its backlog freed, and its
iterator raises `WatchLagged` (for the API to answer RESOURCE_EXHAUSTED; the client
re-subscribes and re-lists). Publishing never blocks and never raises, so a slow or
broken watcher can neither stall a transition nor grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import MutableSet
from typing import Any

import structlog

from faultplane.model.injection import Injection, Transition
from faultplane.observability import metrics

log = structlog.get_logger("faultplane.watch")

WatchItem = tuple[Injection, Transition]
# Events one subscriber may be behind. A transition is a few hundred bytes of evidence
# per sidecar; 1000 of them is a burst far beyond any operator's screen, and bounded.
DEFAULT_MAX_BACKLOG = 1000


class WatchLagged(Exception):
    """The subscriber fell too far behind and was dropped; events were lost."""


class Watch:
    """A subscription to state changes; use as an async iterator, then `close()`.

    Its iterator yields every item offered since subscription, in order, until it is
    closed (then it stops) or dropped for lagging (then it raises WatchLagged).
    `subscribers` is the set this watch adds itself to and leaves on `close()`: its
    WatchHub's.
    """

    def __init__(
        self, subscribers: MutableSet[Any], max_backlog: int = DEFAULT_MAX_BACKLOG
    ) -> None:
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, not {max_backlog}")
        self._items: deque[WatchItem] = deque()
        self._ready = asyncio.Event()
        self._max_backlog = max_backlog
        self._lagged = False
        self._closed = False
        self._subscribers = subscribers
        subscribers.add(self)

    @property
    def backlog(self) -> int:
        """Items offered and not yet read."""
        return len(self._items)

    @property
    def lagged(self) -> bool:
        return self._lagged

    def offer(self, item: WatchItem) -> None:
        """Queue `item` for this subscriber; never blocks, never raises.

        On overflow the subscriber is dropped: its backlog is freed at once (a reader
        that lost events must re-list anyway), later offers are ignored, the reader gets
        WatchLagged, and `faultplane_watch_dropped_total` counts it. The subscriber set
        is not changed here (the caller may be iterating it); `WatchHub.publish` prunes
        dropped subscribers, and `close()` always removes this one.
        """
        if self._closed or self._lagged:
            return
        if len(self._items) >= self._max_backlog:
            self._lagged = True
            self._items.clear()
            with contextlib.suppress(Exception):  # reporting must not fail the publisher
                metrics.WATCH_DROPPED.inc()
                log.warning("watch subscriber dropped: too far behind", max=self._max_backlog)
        else:
            self._items.append(item)
        self._ready.set()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchItem:
        while not self._items:
            if self._lagged:
                raise WatchLagged(
                    f"watch dropped: the subscriber fell more than {self._max_backlog} "
                    "events behind; subscribe again and re-list"
                )
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        """Unsubscribe and free the backlog; a pending read ends (StopAsyncIteration)."""
        self._closed = True
        self._items.clear()
        self._subscribers.discard(self)
        self._ready.set()


class WatchHub:
    """The scheduler's side: `subscribe()` per watcher, `publish(item)` per transition."""

    def __init__(self, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self._max_backlog = max_backlog
        self._subscribers: set[Watch] = set()

    def subscribe(self) -> Watch:
        """Every item published from now on; subscribed before this returns."""
        return Watch(self._subscribers, self._max_backlog)

    def publish(self, item: WatchItem) -> None:
        """Offer `item` to every subscriber; never blocks, never raises."""
        for watch in tuple(self._subscribers):
            watch.offer(item)
            if watch.lagged:
                self._subscribers.discard(watch)

    def __len__(self) -> int:
        """Subscribers still being fed."""
        return len(self._subscribers)
