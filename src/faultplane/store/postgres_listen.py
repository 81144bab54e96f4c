"""LISTEN on PostgreSQL channels from a thread of its own, handing each notification to
the event loop.

One dedicated connection (not a pooled one: a LISTEN belongs to its session), in
autocommit mode, so a notification is delivered as soon as its sender's transaction
commits. A lost connection is reopened after a pause, and `on_reconnect` is called once
it is listening again: notifications sent while it was away are gone, so the caller
reconciles from the tables (which are the truth; a notification only says "look now").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import psycopg
import structlog
from psycopg import sql

log = structlog.get_logger("faultplane.replicas")

RETRY_SECONDS = 1.0
POLL_SECONDS = 0.5  # how often the thread looks whether it should stop


class PostgresListener:
    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = threading.Event()  # set while a connection listens

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="faultplane-listen", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2 * POLL_SECONDS + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    self._call(self._on_reconnect)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=POLL_SECONDS):
                            self._call(self._on_notify, note.channel, note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("notification listener lost its connection", error=str(exc))
                self._stop.wait(RETRY_SECONDS)
        self.listening.clear()

    def _call(self, fn: Callable[..., None], *args: str) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed under us: we are stopping
            self._stop.set()
