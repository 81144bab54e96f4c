"""Turns the scheduler's events into notifications for every `--notify` target.

It reads the scheduler's event watch (transitions and freeze changes, the stream
WatchInjections clients read with `kinds`), so it learns of a transition or a freeze
set, lifted or run out once it is published, and never sits in the withdrawal's path:
`offer` to each courier is a queue append. One aiohttp session serves every target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import aiohttp
import structlog

from faultplane.lifecycle.events import FREEZE, TRANSITION, FreezeEvent, KindWatch, ReadingEvent
from faultplane.notify.courier import Audit, Courier, DeliveryPolicy
from faultplane.notify.events import Event, freeze_event, transition_event
from faultplane.notify.targets import NotifyTarget

log = structlog.get_logger("faultplane.notify")
SETTLE_SECONDS = 2.0  # at stop, how long audits of undelivered events may take


KINDS = {TRANSITION, FREEZE}


class Watched(Protocol):
    """What the notifier reads of the scheduler (faultplane.lifecycle.scheduler)."""

    def watch_events(self, kinds: set[str]) -> KindWatch: ...


class Notifier:
    def __init__(
        self,
        scheduler: Watched,
        targets: Sequence[NotifyTarget],
        audit: Audit,
        web_url: str | None = None,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._targets = tuple(targets)
        self._audit = audit
        self._web_url = web_url
        self._policy = policy or DeliveryPolicy()
        self.couriers: list[Courier] = []
        self._session: aiohttp.ClientSession | None = None
        self._watch: KindWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe and start a courier per target (before the restore runs, so an end
        a restart finishes is told too)."""
        if not self._targets:
            return
        self._session = aiohttp.ClientSession()
        self.couriers = [
            Courier(target, self._session, self._audit, self._policy) for target in self._targets
        ]
        self._watch = self._scheduler.watch_events(KINDS)
        self._tasks = [asyncio.create_task(c.run(), name="notify-courier") for c in self.couriers]
        self._tasks.append(asyncio.create_task(self._follow(), name="notify-watch"))
        log.info("notifications on", targets=[t.name for t in self._targets])

    def link_to(self, web_url: str) -> None:
        """Link events from now on into the dashboard at `web_url` (when `--web-url` was
        not given, the server's own dashboard address once it listens)."""
        self._web_url = web_url.rstrip("/")

    def publish(self, event: Event) -> None:
        for courier in self.couriers:
            courier.offer(event)

    async def _follow(self) -> None:
        while True:
            watch = self._watch
            assert watch is not None
            try:
                async for item in watch:
                    event = self._event(item)
                    if event is not None:
                        self.publish(event)
                return
            except Exception as exc:  # WatchLagged: some events were lost; go on
                log.warning("notifications resubscribing", error=repr(exc))
                watch.close()
                self._watch = self._scheduler.watch_events(KINDS)

    def _event(self, item: object) -> Event | None:
        """The notification an event is, or None (a transition nobody is told of)."""
        if isinstance(item, ReadingEvent):
            return None  # not subscribed; never news
        if isinstance(item, FreezeEvent):
            now = item.freeze
            if now is not None:
                return freeze_event(True, now.by, now.reason, now.until, self._web_url)
            why = "the freeze lapsed" if item.lapsed else "lifted by an operator (see the audit)"
            return freeze_event(False, "", why, None, self._web_url)
        injection, change = item  # type: ignore[misc]
        return transition_event(injection, change, self._web_url)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for courier in self.couriers:
            courier.abandon()
            await courier.settle(SETTLE_SECONDS)
        if self._session is not None:
            await self._session.close()
