"""Which injections the scheduler holds in memory, and finding the others in the store.

Memory holds every live injection (admission checks overlaps against them, their
lifecycles run them) and the `keep_finished` most recently finished ones (default 1000),
so a server that runs for months does not grow without bound. Every injection is in the
store from the moment CreateInjection returns, and one that has left memory is finished,
so its stored record no longer changes. Lookups of those go to the store on the journal's
reader threads (their own SQLite connections): never on the event loop, never queued
behind the single writer thread that the lifecycles' records use.

A stored state can lag memory by a background write; memory wins for every id it holds,
and a page from the store leaves those ids out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator

import structlog

from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.records import SpecParser, injection_from_record
from faultplane.model.injection import Injection, State

log = structlog.get_logger("faultplane.scheduler")

KEEP_FINISHED = 1000

# The listing order, newest first: (created_at, id). A page continues after a key.
PageKey = tuple[float, str]


def page_key(injection: Injection) -> PageKey:
    return (injection.created_at, injection.id)


class InjectionRegistry:
    def __init__(self, journal: Journal, keep_finished: int = KEEP_FINISHED) -> None:
        if keep_finished < 0:
            raise ValueError(f"keep_finished: must be 0 or more, not {keep_finished}")
        self._journal = journal
        self._keep = keep_finished
        self._memory: dict[str, Injection] = {}
        self._finished: OrderedDict[str, Injection] = OrderedDict()  # oldest first
        # Set by the scheduler's restore(); until then, lookups stay in memory.
        self.parse_spec: SpecParser | None = None

    # -- memory ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._memory)

    def __iter__(self) -> Iterator[Injection]:
        return iter(list(self._memory.values()))

    def get(self, injection_id: str) -> Injection | None:
        return self._memory.get(injection_id)

    def add(self, injection: Injection) -> None:
        self._memory[injection.id] = injection
        if not injection.state.live:
            self.retire(injection)

    def remove(self, injection: Injection) -> None:
        """Gone as if never admitted (its first record failed)."""
        if self._memory.get(injection.id) is injection:
            del self._memory[injection.id]
        if self._finished.get(injection.id) is injection:
            del self._finished[injection.id]

    def retire(self, injection: Injection) -> None:
        """A finished injection joins the recent window; the oldest beyond it leave memory
        (they are in the store)."""
        if injection.state.live or self._memory.get(injection.id) is not injection:
            return
        self._finished[injection.id] = injection
        self._finished.move_to_end(injection.id)
        while len(self._finished) > self._keep:
            old_id, old = self._finished.popitem(last=False)
            if self._memory.get(old_id) is old:
                del self._memory[old_id]

    def forget_finished_before(self, before: float) -> int:
        """Drop the finished injections that ended before `before` (the store pruned them)."""
        gone = [
            i for i in self._finished.values() if i.ended_at is not None and i.ended_at < before
        ]
        for injection in gone:
            self.remove(injection)
        return len(gone)

    # -- the store -------------------------------------------------------------------

    async def find(self, injection_id: str) -> Injection | None:
        """In memory, else from the store (readings bounded as in memory)."""
        if (injection := self._memory.get(injection_id)) is not None:
            return injection
        if self.parse_spec is None:
            return None
        return await self._journal.read(self._load, injection_id, self.parse_spec)

    def _load(self, injection_id: str, parse_spec: SpecParser) -> Injection | None:
        """On a reader thread."""
        store = self._journal.store
        stored = store.injections.get(injection_id)
        if stored is None:
            return None
        readings = store.readings.load(injection_id)
        return injection_from_record(stored, readings, parse_spec, strict=False)

    async def page(
        self,
        states: Collection[State],
        service: str,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[Injection], bool]:
        """Up to `limit` injections newest first, older than `after`; and whether more
        follow. Store-listed ones come without readings (`find` has them): a page of
        injections each with thousands of readings would not fit in a reply."""
        matches = [
            injection
            for injection in self._memory.values()
            if (not states or injection.state in states)
            and (not service or service in injection.spec.services)
            and (after is None or page_key(injection) < after)
        ]
        # Every live injection is in memory: the store is asked for finished ones only.
        finished = [s.value for s in State if not s.live and (not states or s in states)]
        if self.parse_spec is not None and finished:
            wanted = None if not states else finished
            skip = frozenset(self._memory)
            matches += await self._journal.read(
                self._load_page, wanted, service, after, limit + 1, skip, self.parse_spec
            )
        matches.sort(key=page_key, reverse=True)
        return matches[:limit], len(matches) > limit

    def _load_page(
        self,
        states: list[str] | None,
        service: str,
        after: PageKey | None,
        limit: int,
        skip: frozenset[str],
        parse_spec: SpecParser,
    ) -> list[Injection]:
        """On a reader thread: the store's page, parsed there too (off the event loop)."""
        stored = self._journal.store.injections.page(states, service or None, after, limit, skip)
        found = []
        for record in stored:
            try:
                found.append(injection_from_record(record, [], parse_spec, strict=False))
            except Exception as exc:  # one unreadable record must not hide every other
                log.error("stored injection unreadable", injection=record.id, error=str(exc))
        return found
