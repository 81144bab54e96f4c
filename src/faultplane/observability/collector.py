"""The injection metrics of one control server, on its `/metrics` beside the xDS ones.

Each server has its own registry: the process-wide metrics (xDS, store, watch,
notifications) plus this server's `InjectionCollector`. Two servers in one process (tests,
the demo's base server) then never share or clash over a state gauge.

The collector is fed by the scheduler's watch (`InjectionFeed`), the stream every
WatchInjections client reads, so a transition moves the numbers as it is published.
The guard's last reading and the freeze are read from memory when scraped: both live
there already (the guard appends each reading to its injection), and a freeze that
lapses on its own is then reported at once. Nothing here reads the store after start.

A scrape runs on the metrics server's thread; it takes its snapshot on the event loop
(`call_soon_threadsafe`), so it never reads dicts a transition is changing.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from faultplane.model.injection import Injection, State, Transition
from faultplane.observability.injections import FINISHED, LIVE, FaultKey, InjectionTally
from faultplane.observability.reasons import TRANSITION_PAIRS
from faultplane.store.base import InjectionRecord

log = structlog.get_logger("faultplane.metrics")
SNAPSHOT_TIMEOUT = 5.0  # seconds a scrape waits for the event loop


class Subscription(Protocol):
    def __aiter__(self) -> Subscription: ...
    async def __anext__(self) -> tuple[Injection, Transition]: ...
    def close(self) -> None: ...


class Observed(Protocol):
    """What the metrics read of the scheduler (faultplane.lifecycle.scheduler)."""

    def watch(self) -> Subscription: ...
    def list(
        self, states: set[State] | None = None, service: str = ""
    ) -> builtins.list[Injection]: ...
    def frozen(self) -> object | None: ...


@dataclass(frozen=True)
class Snapshot:
    by_state: dict[str, int]
    faults: dict[FaultKey, int]
    transitions: dict[tuple[str, str], int]
    readings: dict[tuple[str, str], float]  # (injection id, slo) -> last readable value
    frozen: bool
    waiting: int


class InjectionRows(Protocol):
    """The store's injections (faultplane.store.InjectionRepository), any backend."""

    def load(self, states: Collection[str] | None = None) -> Sequence[InjectionRecord]: ...


def store_counts(rows: InjectionRows) -> tuple[dict[str, int], dict[str, str]]:
    """(finished state -> count, live id -> state) as the store holds them now. Blocking:
    run it on a reader thread. Once per start; it reads every row's document."""
    finished = Counter(row.state for row in rows.load([s.value for s in FINISHED]))
    live = {row.id: row.state for row in rows.load([s.value for s in LIVE])}
    return dict(finished), live


class InjectionCollector:
    """A prometheus-client collector over one server's tally, scheduler and loop."""

    def __init__(self, scheduler: Observed, tally: InjectionTally) -> None:
        self._scheduler = scheduler
        self._tally = tally
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def snapshot(self) -> Snapshot:
        """On the event loop: everything one scrape reports."""
        readings: dict[tuple[str, str], float] = {}
        for injection in self._scheduler.list(set(LIVE)):
            last = next((r for r in reversed(injection.readings) if r.value is not None), None)
            if last is not None and last.value is not None:
                readings[(injection.id, injection.spec.steady_state.slo)] = last.value
        tally = self._tally
        return Snapshot(
            tally.by_state(), tally.active_faults(), dict(tally.transitions), readings,
            self._scheduler.frozen() is not None, tally.waiting(),
        )  # fmt: skip

    def _snapshot_from_thread(self) -> Snapshot:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the metrics' event loop is not running")
        done: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                done.set_result(self.snapshot())
            except Exception as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(take)
        return done.result(timeout=SNAPSHOT_TIMEOUT)

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._snapshot_from_thread()
        except Exception as exc:  # a scrape must not kill the metrics server
            log.warning("injection metrics unavailable", error=repr(exc))
            return
        yield from render(snap)


def render(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot (pure)."""
    states = GaugeMetricFamily(
        "faultplane_injections",
        "Injections in each state (every state, 0 included). Finished states count the "
        "store's history at start plus what finished since.",
        labels=["state"],
    )
    for state, count in snap.by_state.items():
        states.add_metric([state], count)
    yield states
    faults = GaugeMetricFamily(
        "faultplane_active_faults",
        "Fault parts of ACTIVE injections, per service and fault type.",
        labels=["service", "type"],
    )
    for (service, kind), count in sorted(snap.faults.items()):
        faults.add_metric([service, kind], count)
    yield faults
    transitions = CounterMetricFamily(
        "faultplane_injection_transitions",
        "Injection state transitions since this server started, by new state and a "
        "closed set of reason kinds (faultplane.observability.reasons).",
        labels=["to", "reason_kind"],
    )
    counts = {pair: 0 for pair in TRANSITION_PAIRS} | snap.transitions
    for (to, kind), count in sorted(counts.items()):
        transitions.add_metric([to, kind], count)
    yield transitions
    readings = GaugeMetricFamily(
        "faultplane_guard_reading",
        "The steady-state guard's last readable SLO value per live injection (the series "
        "ends with the injection).",
        labels=["injection", "slo"],
    )
    for (injection_id, slo), value in sorted(snap.readings.items()):
        readings.add_metric([injection_id, slo], value)
    yield readings
    yield GaugeMetricFamily(
        "faultplane_frozen", "1 while a freeze refuses new injections, else 0.",
        value=int(snap.frozen),
    )  # fmt: skip
    yield GaugeMetricFamily(
        "faultplane_queue_depth",
        "Experiments waiting to start: QUEUED ones (the scheduler's queue) and those "
        "awaiting a second person's approval (PENDING_APPROVAL).",
        value=snap.waiting,
    )


class _ProcessMetrics:
    """The process-wide registry's metrics, inside a server's own registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class InjectionFeed:
    """Feeds a tally from the scheduler's watch, from start to stop."""

    def __init__(self, scheduler: Observed) -> None:
        self._scheduler = scheduler
        self.tally = InjectionTally()
        self.collector = InjectionCollector(scheduler, self.tally)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProcessMetrics())
        self.registry.register(self.collector)
        self._task: asyncio.Task[None] | None = None
        self._watch: Subscription | None = None

    def start(self, finished: Mapping[str, int], live: Mapping[str, str]) -> None:
        """Before the scheduler restores: seed from the store's rows (`store_counts`) and
        subscribe, so that the restore's own transitions are counted."""
        self.collector.bind(asyncio.get_running_loop())
        self.tally.seed(finished, live)
        self._watch = self._scheduler.watch()
        self._task = asyncio.create_task(self._follow(self._watch), name="injection-metrics")

    def restored(self) -> None:
        """After the restore: the live injections' states and faults from memory."""
        self.tally.refresh(self._scheduler.list(set(LIVE)))

    async def _follow(self, watch: Subscription) -> None:
        while True:
            try:
                async for injection, change in watch:
                    self.tally.observe(injection, change)
                return
            except Exception as exc:  # WatchLagged: events lost; start again from memory
                log.warning("injection metrics resubscribing", error=repr(exc))
                watch.close()
                watch = self._watch = self._scheduler.watch()
                self.tally.refresh(self._scheduler.list(set(LIVE)), replace=True)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


__all__ = ["InjectionCollector", "InjectionFeed", "render", "store_counts"]
