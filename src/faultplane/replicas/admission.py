"""Admission across replicas: one admission at a time on all of them, each seeing every
live injection, whichever replica owns it.

The gate holds the replicas' admission lock (faultplane.store.postgres_leases) while the
scheduler decides and records (faultplane.lifecycle.scheduler.create) and hands it the
live injections in the store (parsed once per id and state), so the overlap and slot
checks of faultplane.lifecycle.admission cover the other replicas' injections too: N
concurrent creates anywhere admit exactly those that do not conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from faultplane.lifecycle.records import SpecParser, injection_from_record
from faultplane.model.injection import Injection, State

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore
    from faultplane.store.postgres_leases import AdmissionLock

LIVE = tuple(s.value for s in State if s.live)


class AdmissionGate:
    def __init__(self, store: PostgresStore, lock: AdmissionLock) -> None:
        self._store = store
        self._lock = lock
        self._local = asyncio.Lock()  # this replica's creates queue here, not on the DB
        self._parsed: dict[str, tuple[tuple[str, int], Injection]] = {}
        self.parse_spec: SpecParser | None = None  # set once the server has its parts

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[list[Injection]]:
        async with self._local:
            await asyncio.to_thread(self._lock.acquire)
            try:
                yield await asyncio.to_thread(self._live)
            finally:
                await asyncio.to_thread(self._lock.release)

    def _live(self) -> list[Injection]:
        assert self.parse_spec is not None
        found = []
        stored = self._store.injections.load(LIVE)
        for record in stored:
            key = (record.state, len(record.transitions))
            cached = self._parsed.get(record.id)
            if cached is None or cached[0] != key:
                injection = injection_from_record(record, [], self.parse_spec, strict=False)
                cached = self._parsed[record.id] = (key, injection)
            found.append(cached[1])
        alive = {record.id for record in stored}
        for gone in [i for i in self._parsed if i not in alive]:
            del self._parsed[gone]
        return found

    def close(self) -> None:
        self._lock.close()
