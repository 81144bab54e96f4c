"""Traffic through real sidecars: when a change shows, how requests fare, steady load.

All times are wall-clock (`time.time()`), comparable with the server's timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp

from bench.http1 import Connection

TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass(frozen=True)
class Reply:
    status: int
    ms: float
    size: int
    at: float  # when the response ended


class Watcher:
    """Requests each URL back to back (one keep-alive connection each, `interval` apart)
    and records when the first response satisfying `until(status)` arrived. Enter it
    before the change; `wait()` returns, per URL, the arrival time of that first response
    (an upper bound of when the change took effect there, late by at most one request
    plus `interval`).
    """

    def __init__(
        self, urls: Sequence[str], until: Callable[[int], bool], interval: float = 0.01
    ) -> None:
        self.urls = list(urls)
        self._until = until
        self._interval = interval
        self._found: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connections = {url: _connection(url) for url in self.urls}

    async def __aenter__(self) -> Watcher:
        # One request each first, so no connection set-up lands in the measurement.
        await asyncio.gather(*(c.get() for c in self._connections.values()))
        self._tasks = [asyncio.create_task(self._watch(url)) for url in self.urls]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._connections.values()))

    async def wait(self, timeout: float) -> dict[str, float]:
        """Per URL, when the change was first seen; raises TimeoutError naming the laggards."""
        if not self._tasks:
            return {}
        done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in done:
            task.result()
        if pending:
            missing = [u for u in self.urls if u not in self._found]
            raise TimeoutError(f"change not seen within {timeout:g}s at {missing}")
        return dict(self._found)

    async def _watch(self, url: str) -> None:
        connection = self._connections[url]
        while True:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
                status, _ = await connection.get()
                if self._until(status):
                    self._found[url] = time.time()
                    return
            await asyncio.sleep(self._interval)


def _connection(url: str) -> Connection:
    parsed = urlsplit(url)
    assert parsed.hostname is not None and parsed.port is not None
    return Connection(parsed.hostname, parsed.port, parsed.path or "/")


async def send(url: str, count: int, concurrency: int = 20, method: str = "GET") -> list[Reply]:
    """`count` requests, at most `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def one(session: aiohttp.ClientSession) -> Reply:
        async with limit:
            started = time.monotonic()
            async with session.request(method, url) as response:
                body = await response.read()
            return Reply(
                response.status, (time.monotonic() - started) * 1000, len(body), time.time()
            )

    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        return list(await asyncio.gather(*(one(session) for _ in range(count))))


class SteadyLoad:
    """`rate` requests per second to each URL until stopped (for the SLO guard)."""

    def __init__(self, urls: Sequence[str], rate: float) -> None:
        self.urls = list(urls)
        self.rate = rate
        self.sent = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SteadyLoad:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        self._tasks = [asyncio.create_task(self._drive(url)) for url in self.urls]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _drive(self, url: str) -> None:
        assert self._session is not None
        session = self._session
        period = 1 / self.rate
        next_at = time.monotonic()

        async def one() -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    await response.read()
            self.sent += 1

        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            for task in pending:
                task.cancel()
