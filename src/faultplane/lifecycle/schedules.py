"""Recurring experiments in the running server: each occurrence becomes its own queued
injection, with its own id and verdict.

A schedule is an experiment document plus a recurrence (faultplane.scheduling.
recurrence: `every` from a start, or cron in an IANA zone, across DST). It is kept in the
store (`scheduling_items`, kind "schedule") with its cursor: the last occurrence already
queued (or, before the first, when it was created or resumed). `fire` queues every
occurrence after the cursor up to AHEAD from now, so `faultplane queue` shows it
beforehand, each with not_before its instant, not_after the next occurrence (one missed
by a whole period expires instead of piling up) and on_conflict queue.

Exactly once across restarts: an occurrence's injection id is derived from the schedule
and the instant (`sch-…-20261203T0900Z`). The injection is recorded QUEUED first, then
the cursor moves; a crash between the two re-derives the same id after the restart and
finds it already there (nothing duplicated), and a crash before it finds it missing and
queues it (nothing lost).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import HELD, REFUTED
from faultplane.model.spec import InjectionSpec
from faultplane.scheduling.recurrence import Recurrence, due, occurrence_id, parse_recurrence

log = structlog.get_logger("faultplane.schedules")

KIND = "schedule"
AHEAD = timedelta(hours=1)  # occurrences are queued this long before their instant
HISTORY = 20  # occurrences remembered per schedule (the held-rate's sample)
CHECK_EVERY = 60.0  # at least this often, the timer looks for due occurrences

Exists = Callable[[str], Awaitable[bool]]
Enqueue = Callable[[str, InjectionSpec, Mapping[str, Any]], Awaitable[None]]
SpecOf = Callable[[Mapping[str, Any]], InjectionSpec]


class UnknownSchedule(KeyError):
    """No schedule has this id."""


@dataclass
class StoredSchedule:
    """`body`: name, document (the InjectionRequest as JSON), recurrence (the parser's
    input, `start` pinned), paused, cursor (epoch seconds), fired ([[at, id], ...],
    newest last), created_by, created_at."""

    id: str
    body: dict[str, Any]
    rule: Recurrence

    @property
    def paused(self) -> bool:
        return bool(self.body.get("paused"))

    @property
    def cursor(self) -> datetime:
        return datetime.fromtimestamp(self.body["cursor"], UTC)

    def next_at(self) -> datetime:
        return self.rule.next_after(self.cursor)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


class Schedules:
    """The schedules, in memory and in the store, and the timer that fires them."""

    def __init__(self, journal: Journal, clock: Callable[[], float]) -> None:
        self._journal = journal
        self._clock = clock
        self._items: dict[str, StoredSchedule] = {}
        self._lock = asyncio.Lock()  # one fire at a time: an occurrence is queued once
        self._task: asyncio.Task[None] | None = None
        self._exists: Exists | None = None
        self._enqueue: Enqueue | None = None
        self._spec_of: SpecOf | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def start(self, exists: Exists, enqueue: Enqueue, spec_of: SpecOf) -> None:
        """Load from the store, fire what is due (missed while down too), then keep
        firing on a timer until `close`."""
        self._exists, self._enqueue, self._spec_of = exists, enqueue, spec_of
        rows = await self._journal.read(self._journal.store.scheduling.list, KIND)
        self._items = {
            item_id: StoredSchedule(
                item_id, body, parse_recurrence(body["recurrence"], self._now())
            )
            for item_id, body in rows
        }
        await self.fire()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            try:
                await self.fire()
            except Exception as exc:  # a store outage: try again at the next tick
                log.warning("firing schedules failed", error=str(exc))

    def _delay(self) -> float:
        waits = [CHECK_EVERY]
        for item in self._items.values():
            if not item.paused:
                waits.append((item.next_at() - AHEAD).timestamp() - self._clock())
        return max(0.5, min(waits))

    def list(self) -> list[StoredSchedule]:
        return [self._items[k] for k in sorted(self._items)]

    def get(self, schedule_id: str) -> StoredSchedule:
        item = self._items.get(schedule_id)
        if item is None:
            raise UnknownSchedule(schedule_id)
        return item

    async def create(
        self, document: Mapping[str, Any], recurrence: dict[str, Any], name: str, principal: str
    ) -> StoredSchedule:
        """Validate the recurrence (ScheduleError names the field), persist, fire."""
        now = self._now()
        if "every" in recurrence and "start" not in recurrence:
            recurrence = {**recurrence, "start": _iso(now)}  # a reload keeps the anchor
        rule = parse_recurrence(recurrence, now)
        body = {
            "name": name, "document": dict(document), "recurrence": recurrence,
            "paused": False, "cursor": now.timestamp(), "fired": [],
            "created_by": principal, "created_at": time.time(),
        }  # fmt: skip
        item = StoredSchedule(f"sch-{secrets.token_hex(4)}", body, rule)
        await self._save(item)
        self._items[item.id] = item
        await self.fire()
        return item

    async def pause(self, schedule_id: str, paused: bool) -> StoredSchedule:
        """Pause, or resume from now (what fell due while paused is skipped)."""
        async with self._lock:  # not between a fire's occurrence and its save
            item = self.get(schedule_id)
            item.body["paused"] = paused
            if not paused:
                item.body["cursor"] = max(item.body["cursor"], self._clock())
            await self._save(item)
        if not paused:
            await self.fire()
        return item

    async def remove(self, schedule_id: str) -> StoredSchedule:
        async with self._lock:  # a fire in progress would save it back
            item = self.get(schedule_id)
            await self._journal.run(self._journal.store.scheduling.delete, KIND, item.id)
            del self._items[item.id]
        return item

    async def _save(self, item: StoredSchedule) -> None:
        await self._journal.run(self._journal.store.scheduling.put, KIND, item.id, item.body)

    async def fire(self) -> list[str]:
        """Queue every due occurrence of every running schedule; their ids."""
        assert self._exists and self._enqueue and self._spec_of, "start() first"
        queued: list[str] = []
        async with self._lock:
            now = self._now()
            for item in self.list():
                if item.paused or item.id not in self._items:
                    continue
                for at in due(item.rule, item.cursor, now, AHEAD):
                    queued += await self._occur(item, at)
        return queued

    async def _occur(self, item: StoredSchedule, at: datetime) -> list[str]:
        assert self._exists and self._enqueue and self._spec_of
        injection_id = occurrence_id(item.id, at)
        fresh = not await self._exists(injection_id)
        if fresh:
            document = occurrence_document(item.body["document"], at, item.rule.next_after(at))
            await self._enqueue(injection_id, self._spec_of(document), document)
            log.info("schedule occurrence queued", schedule=item.id, injection=injection_id)
        item.body["cursor"] = at.timestamp()
        fired = [f for f in item.body["fired"] if f[1] != injection_id]
        item.body["fired"] = [*fired, [at.timestamp(), injection_id]][-HISTORY:]
        await self._save(item)
        return [injection_id] if fresh else []


def held_rate(verdicts: list[str]) -> tuple[float, int]:
    """(held / judged, judged): only held and refuted verdicts are judged; one that
    never started or was inconclusive says nothing about the hypothesis."""
    judged = [v for v in verdicts if v in (HELD, REFUTED)]
    if not judged:
        return 0.0, 0
    return sum(v == HELD for v in judged) / len(judged), len(judged)


def occurrence_document(
    document: Mapping[str, Any], at: datetime, deadline: datetime
) -> dict[str, Any]:
    """The experiment of one occurrence: queued, not before its instant, not after the
    next one."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        **document,
        "on_conflict": "ON_CONFLICT_QUEUE",
        "not_before": at.astimezone(UTC).strftime(stamp),
        "not_after": deadline.astimezone(UTC).strftime(stamp),
    }
