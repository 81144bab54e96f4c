"""Subscriptions to injection state changes (WatchInjections, the demo, the CLI)."""

from __future__ import annotations

import asyncio

from faultplane.scheduler.model import Injection, Transition


class Watch:
    """A subscription to state changes; use as an async iterator, then `close()`."""

    def __init__(self, watchers: set[asyncio.Queue[tuple[Injection, Transition]]]) -> None:
        self._queue: asyncio.Queue[tuple[Injection, Transition]] = asyncio.Queue()
        self._watchers = watchers
        watchers.add(self._queue)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> tuple[Injection, Transition]:
        return await self._queue.get()

    def close(self) -> None:
        self._watchers.discard(self._queue)
