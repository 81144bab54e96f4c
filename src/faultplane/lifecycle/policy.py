"""The server's scheduling policy in the running server: its limits, persisted and
audited (the API gate audits every SetPolicy), and the cool-down's memory.

The rules themselves are the pure core's (faultplane.scheduling.rules): this module keeps
what an operator set (cool-down, per-service and fleet-wide caps) in the store's
settings, the dependency graph the server was started with (the mesh's, or
`serve --dependency-graph`), and when each service last had an experiment started. That
memory is persisted too, so a restart neither forgets a cool-down nor reorders the
queue's coverage order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faultplane.lifecycle.journal import Journal
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.rules import Policy
from faultplane.scheduling.windows import Blackout

POLICY_KEY = "scheduling.policy"
LAST_STARTED_KEY = "scheduling.last_started"


@dataclass(frozen=True)
class Limits:
    """What an operator sets; 0 means no such limit. `dependency_rule`: experiments on
    one request path wait for each other (off by default, like every limit)."""

    cooldown_seconds: float = 0.0
    max_per_service: int = 0
    max_fleet: int = 0
    dependency_rule: bool = False
    updated_by: str = ""
    updated_at: float = 0.0


class PolicyRules:
    """The limits, the graph and the cool-down memory; `policy` composes the core's
    `Policy` for one re-plan."""

    def __init__(self, journal: Journal, graph: DependencyGraph | None = None) -> None:
        self._journal = journal
        self.graph = graph or DependencyGraph()
        self.limits = Limits()
        self._last_started: dict[str, float] = {}

    async def load(self) -> None:
        settings = self._journal.store.settings
        body = await self._journal.read(settings.get, POLICY_KEY)
        self.limits = Limits(**body) if body else Limits()
        last = await self._journal.read(settings.get, LAST_STARTED_KEY)
        self._last_started = {k: float(v) for k, v in (last or {}).items()}

    async def set(self, limits: Limits) -> Limits:
        limits = Limits(**{**asdict(limits), "updated_at": time.time()})
        await self._journal.run(self._journal.store.settings.set, POLICY_KEY, asdict(limits))
        self.limits = limits
        return limits

    def policy(self, blackouts: tuple[Blackout, ...], frozen: bool) -> Policy:
        lim = self.limits
        return Policy(
            cooldown=timedelta(seconds=lim.cooldown_seconds) if lim.cooldown_seconds else None,
            max_per_service=lim.max_per_service or None,
            max_fleet=lim.max_fleet or None,
            graph=self.graph if lim.dependency_rule else DependencyGraph(),
            blackouts=blackouts,
            frozen=frozen,
        )

    def last_started(self) -> Mapping[str, datetime]:
        """Per service, when an experiment on it last started (the packer's view)."""
        return {k: datetime.fromtimestamp(v, UTC) for k, v in self._last_started.items()}

    def started(self, services: frozenset[str], at: float) -> None:
        """An experiment on `services` started at `at`: remembered, and persisted in the
        background (a lost write only shortens a cool-down; the fault is unaffected)."""
        self._last_started.update((s, at) for s in services)
        body: dict[str, Any] = dict(self._last_started)
        store = self._journal.store
        self._journal.write_later(
            LAST_STARTED_KEY,
            "cool-down memory",
            lambda: self._journal.run(store.settings.set, LAST_STARTED_KEY, body),
        )
