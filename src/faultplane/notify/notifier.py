"""Turns the scheduler's events into notifications for every `--notify` target.

It reads the scheduler's watch (the stream WatchInjections clients read), so it learns
of a transition once it is published and never sits in the withdrawal's path: `offer`
to each courier is a queue append. A freeze is not a transition: its state is compared
in memory every `FREEZE_CHECK` seconds, which also catches a freeze that lapses on its
own. One aiohttp session serves every target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog

from faultplane.notify.courier import Audit, Courier, DeliveryPolicy
from faultplane.notify.events import Event, freeze_event, transition_event
from faultplane.notify.targets import NotifyTarget
from faultplane.observability.collector import Observed, Subscription

log = structlog.get_logger("faultplane.notify")
FREEZE_CHECK = 0.5  # seconds between looks at the freeze (in memory)
SETTLE_SECONDS = 2.0  # at stop, how long audits of undelivered events may take


class Notifier:
    def __init__(
        self,
        scheduler: Observed,
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
        self._watch: Subscription | None = None
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
        self._watch = self._scheduler.watch()
        self._tasks = [asyncio.create_task(c.run(), name="notify-courier") for c in self.couriers]
        self._tasks.append(asyncio.create_task(self._follow(), name="notify-watch"))
        log.info("notifications on", targets=[t.name for t in self._targets])

    def link_to(self, web_url: str) -> None:
        """Link events from now on into the dashboard at `web_url` (when `--web-url` was
        not given, the server's own dashboard address once it listens)."""
        self._web_url = web_url.rstrip("/")

    def restored(self) -> None:
        """Once the restore has reloaded the freeze: from now on, a change is news."""
        if self._targets:
            self._tasks.append(asyncio.create_task(self._freezes(), name="notify-freeze"))

    def publish(self, event: Event) -> None:
        for courier in self.couriers:
            courier.offer(event)

    async def _follow(self) -> None:
        while True:
            watch = self._watch
            assert watch is not None
            try:
                async for injection, change in watch:
                    event = transition_event(injection, change, self._web_url)
                    if event is not None:
                        self.publish(event)
                return
            except Exception as exc:  # WatchLagged: some events were lost; go on
                log.warning("notifications resubscribing", error=repr(exc))
                watch.close()
                self._watch = self._scheduler.watch()

    async def _freezes(self) -> None:
        seen: Any = self._scheduler.frozen()
        while True:
            await asyncio.sleep(FREEZE_CHECK)
            now: Any = self._scheduler.frozen()
            if now is seen:
                continue
            if now is not None:
                self.publish(freeze_event(True, now.by, now.reason, now.until, self._web_url))
            else:
                until = getattr(seen, "until", None)
                lapsed = until is not None and until <= time.time()
                why = "the freeze lapsed" if lapsed else "lifted by an operator (see the audit)"
                self.publish(freeze_event(False, "", why, None, self._web_url))
            seen = now

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
