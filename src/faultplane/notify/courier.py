"""Delivery to one webhook: a bounded queue, one sender, retries with backoff.

`offer` never blocks and never raises, so whoever reports an event (the watch that
follows a withdrawal) is never delayed by a slow or dead receiver. The queue holds at
most `DeliveryPolicy.queue` events: when full, the oldest is dropped, counted and
audited. Each event is tried up to `attempts` times, waiting `first_delay` seconds and
doubling (at most `max_delay`) between tries, each try bounded by `timeout`; an event
that fails every try is counted and audited. Events go out in order, one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from faultplane.notify.events import Event
from faultplane.notify.formats import body
from faultplane.notify.targets import NotifyTarget
from faultplane.observability import metrics

log = structlog.get_logger("faultplane.notify")
Audit = Callable[[dict[str, Any]], Awaitable[object]]


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int = 6
    first_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 5.0  # seconds per attempt, connecting included
    queue: int = 100  # events waiting per target

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.queue < 1:
            raise ValueError("notify policy: attempts and queue must be at least 1")
        for name in ("first_delay", "max_delay", "timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"notify policy: {name} must be a positive number of seconds")

    def delay(self, failed: int) -> float:
        """Seconds before the try after `failed` failed tries."""
        return float(min(self.max_delay, self.first_delay * 2 ** (failed - 1)))


class Courier:
    def __init__(
        self,
        target: NotifyTarget,
        session: aiohttp.ClientSession,
        audit: Audit,
        policy: DeliveryPolicy,
    ) -> None:
        self.target = target
        self._session = session
        self._audit = audit
        self._policy = policy
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._audits: set[asyncio.Task[object]] = set()
        self._sending: Event | None = None  # the event being tried now
        self.delivered = 0  # for tests and the log

    def offer(self, event: Event) -> None:
        """Queue `event`; never blocks. A full queue drops its oldest (audited)."""
        if len(self._queue) >= self._policy.queue:
            dropped = self._queue.popleft()
            metrics.NOTIFICATIONS.labels("dropped").inc()
            self._record(dropped, "DROPPED", f"queue of {self._policy.queue} full")
        self._queue.append(event)
        self._ready.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            self._sending = self._queue.popleft()
            await self._deliver(self._sending)
            self._sending = None

    async def _deliver(self, event: Event) -> None:
        policy, payload = self._policy, body(event, self.target.format)
        problem = ""
        for attempt in range(1, policy.attempts + 1):
            problem = await self._post(payload)
            if not problem:
                metrics.NOTIFICATIONS.labels("delivered").inc()
                self.delivered += 1
                return
            if attempt == policy.attempts:
                break
            metrics.NOTIFICATIONS.labels("retried").inc()
            delay = policy.delay(attempt)
            log.info("notification failed, retrying", target=self.target.name,
                     notification=event.kind, error=problem, retry_in_s=delay)  # fmt: skip
            await asyncio.sleep(delay)
        metrics.NOTIFICATIONS.labels("failed").inc()
        self._record(event, "FAILED", f"{policy.attempts} attempts; last: {problem}")

    async def _post(self, payload: dict[str, Any]) -> str:
        """ "" when the receiver took it (2xx), else what went wrong."""
        try:
            timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
            async with self._session.post(self.target.url, json=payload, timeout=timeout) as r:
                if 200 <= r.status < 300:
                    return ""
                return f"HTTP {r.status}"
        except TimeoutError:
            return f"no answer within {self._policy.timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _record(self, event: Event, outcome: str, detail: str) -> None:
        """Audit an undelivered event in the background (the log says it at once)."""
        log.warning("notification not delivered", target=self.target.name,
                    notification=event.kind, injection=event.injection_id, outcome=outcome,
                    detail=detail)  # fmt: skip
        entry = {
            "kind": "notification",
            "at": time.time(),
            "method": f"notify.{event.kind}",
            "principal": "faultplane",
            "via": "notify",
            "peer": self.target.name,
            "outcome": outcome,
            "detail": detail,
            "injection_id": event.injection_id,
        }
        write = asyncio.ensure_future(self._audit(entry))
        self._audits.add(write)
        write.add_done_callback(self._audited)

    def _audited(self, write: asyncio.Future[object]) -> None:
        self._audits.discard(write)  # type: ignore[arg-type]
        if not write.cancelled() and write.exception() is not None:
            log.error("undelivered notification not audited", error=repr(write.exception()))

    def abandon(self) -> int:
        """At a stop (the sender cancelled): audit every event not delivered, the one being
        tried included, as dropped; how many there were."""
        if self._sending is not None:
            self._queue.appendleft(self._sending)
            self._sending = None
        left = len(self._queue)
        while self._queue:
            metrics.NOTIFICATIONS.labels("dropped").inc()
            self._record(self._queue.popleft(), "DROPPED", "the server stopped first")
        return left

    async def settle(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the audit records under way."""
        if self._audits:
            await asyncio.wait(set(self._audits), timeout=timeout)
