"""The guard fails safe, never open: whatever goes wrong while guarding one injection (its
source raises or hangs, one sidecar's admin port or stats page is unusable, the store
fails or hangs, the scheduler forgot it) is that injection's unreadable reading, and every
other ACTIVE injection is still read and still aborted on its own breach.

Pure logic: a fake plane, scheduler, store and sources around the real guard, run by its
own `run()` loop at a fast tick. Each test waits for an event (an abort, a reading) with a
deadline that only bounds a failing run.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from faultplane.demo.processes import wait_until
from faultplane.guard.steady_state import JITTER_SHARE, SteadyStateGuard
from faultplane.model.injection import SloReading
from faultplane.model.spec import SteadyStateSpec
from faultplane.slo.baseline import BaselineBook
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import EnvoySource, Reading, admin_address
from faultplane.store import StoreError
from tests.test_slo_counters import Traffic, envoy_stats

TICK = 0.05
ABORT_AFTER = 0.2
# Bounds a failing run only; a passing one returns at the event (a few ticks).
DEADLINE = 10.0
SERVICE = "pay"
FAKE_SLO = SloDef(name="pay-ok", service=SERVICE, source="fake", window_seconds=60)
ENVOY_SLO = SloDef(name="pay-ok", service=SERVICE, source="envoy", window_seconds=60)
HANG = "hang"


# --- fakes ------------------------------------------------------------------------------


@dataclass
class FakeSidecar:
    node_id: str
    service: str = SERVICE
    metadata: dict[str, object] = field(default_factory=dict)


class FakePlane:
    def __init__(self, sidecars: Iterable[FakeSidecar]) -> None:
        self.sidecars = list(sidecars)

    def candidates(self, service: str, namespace: str | None = None) -> list[FakeSidecar]:
        return [s for s in self.sidecars if s.service == service]

    def stats_address(self, node_id: str) -> str | None:
        """As MeshSource: the admin port its metadata gives (ValueError if not a port)."""
        sidecar = next(s for s in self.sidecars if s.node_id == node_id)
        return admin_address(sidecar.metadata.get("admin_port"))


@dataclass
class FakeTarget:
    service: str = SERVICE


@dataclass
class FakeSpec:
    steady_state: SteadyStateSpec
    target: FakeTarget = field(default_factory=FakeTarget)


@dataclass
class FakeInjection:
    """What the guard reads of an injection: id, spec, targets and its readings."""

    id: str
    targets: tuple[str, ...]
    spec: FakeSpec = field(
        default_factory=lambda: FakeSpec(SteadyStateSpec("pay-ok", 0.9, ABORT_AFTER))
    )
    readings: list[SloReading] = field(default_factory=list)

    def targets_on(self, service: str) -> tuple[str, ...]:
        return self.targets if service == self.spec.target.service else ()


class FakeScheduler:
    """Records refutes; `failing_records` raise on record_reading like a store error
    (before keeping the reading), `gone` raise KeyError on refute (forgotten meanwhile)."""

    def __init__(
        self,
        injections: Sequence[FakeInjection],
        failing_records: bool = False,
        gone: Iterable[str] = (),
    ) -> None:
        self.injections = {i.id: i for i in injections}
        self.failing_records = failing_records
        self.gone = set(gone)
        self.refuted: dict[str, tuple[str, float]] = {}

    def active(self) -> list[FakeInjection]:
        return list(self.injections.values())  # still ACTIVE while being withdrawn

    async def record_reading(self, injection_id: str, reading: SloReading) -> None:
        if self.failing_records:
            raise StoreError("disk I/O error")
        self.injections[injection_id].readings.append(reading)

    def refute(self, injection_id: str, reason: str, breach_limit_at: float) -> None:
        if injection_id in self.gone:
            raise KeyError(injection_id)
        self.refuted.setdefault(injection_id, (reason, breach_limit_at))


class FakeReadings:
    def __init__(self) -> None:
        self.baseline: list[tuple[Any, ...]] = []

    def add_baseline(self, *args: Any) -> None:
        self.baseline.append(args)

    def prune_baseline(self, before: float) -> None:
        pass


class FakeStore:
    def __init__(self) -> None:
        self.readings = FakeReadings()


class FakeJournal:
    """`baseline`: "ok", "raise" (a store error) or "hang" (a store that never answers)."""

    def __init__(self, baseline: str = "ok") -> None:
        self.store = FakeStore()
        self.baseline = baseline

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.baseline == "raise":
            raise StoreError("database is locked")
        if self.baseline == HANG:
            await asyncio.Event().wait()
        return fn(*args)


class FakeSource:
    """Each pod's behaviour: a value, an exception to raise, or HANG. A read's value is
    the lowest of its pods'."""

    def __init__(self, pods: dict[str, float | BaseException | str]) -> None:
        self.pods = pods

    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading:
        values = []
        for pod in pods:
            behaviour = self.pods[pod]
            if isinstance(behaviour, BaseException):
                raise behaviour
            if behaviour == HANG:
                await asyncio.Event().wait()
            assert isinstance(behaviour, float)
            values.append(behaviour)
        return Reading(min(values))


def make_guard(
    scheduler: FakeScheduler,
    pods: Iterable[str] | Iterable[FakeSidecar],
    source: object,
    slo: SloDef = FAKE_SLO,
    journal: FakeJournal | None = None,
    envoy: EnvoySource | None = None,
) -> SteadyStateGuard:
    sidecars = [p if isinstance(p, FakeSidecar) else FakeSidecar(p) for p in pods]
    envoy = envoy or EnvoySource(keep_seconds=60)
    return SteadyStateGuard(
        scheduler,  # type: ignore[arg-type]
        FakePlane(sidecars),  # type: ignore[arg-type]
        {slo.name: slo},
        {"fake": source, "envoy": envoy},  # type: ignore[dict-item]
        envoy,
        BaselineBook(keep_seconds=60),
        journal or FakeJournal(),  # type: ignore[arg-type]
        TICK,
    )


@asynccontextmanager
async def running(guard: SteadyStateGuard) -> AsyncIterator[None]:
    """The guard's own loop, cancelled afterwards."""
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(guard.run(session))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def until_refuted(scheduler: FakeScheduler, *ids: str) -> None:
    async def refuted() -> bool:
        return all(i in scheduler.refuted for i in ids)

    await wait_until(refuted, DEADLINE, f"the guard to abort {', '.join(ids)}")


# --- one injection's read fails ----------------------------------------------------------


async def test_a_read_that_raises_is_a_breach_of_that_injection_only() -> None:
    """A's source raises (first in the list, as it was when this aborted every tick); B
    breaches and must still abort; C is fine and must not."""
    a = FakeInjection("a", ("pay-1",))
    b = FakeInjection("b", ("pay-2",))
    c = FakeInjection("c", ("pay-3",))
    scheduler = FakeScheduler([a, b, c])
    source = FakeSource({"pay-1": RuntimeError("boom"), "pay-2": 0.5, "pay-3": 1.0})
    guard = make_guard(scheduler, ["pay-1", "pay-2", "pay-3"], source)

    async with running(guard):
        await until_refuted(scheduler, "a", "b")
        await wait_until(_has_readings(c, 3), DEADLINE, "readings of c")

    assert scheduler.refuted["b"][0].startswith("steady-state breach: pay-ok 0.5000 < 0.9")
    assert "boom" in scheduler.refuted["a"][0]
    assert a.readings[0].breach and a.readings[0].value is None
    assert "RuntimeError: boom" in a.readings[0].error
    assert all(r.breach and r.value == 0.5 for r in b.readings)
    assert "c" not in scheduler.refuted
    assert not any(r.breach for r in c.readings) and c.readings[0].value == 1.0


async def test_a_read_that_hangs_times_out_as_unreadable() -> None:
    """A's source never answers: the read is bounded (default timeout), A's reading says
    so, and B is aborted meanwhile instead of waiting behind A."""
    a = FakeInjection("a", ("pay-1",))
    b = FakeInjection("b", ("pay-2",))
    scheduler = FakeScheduler([a, b])
    guard = make_guard(scheduler, ["pay-1", "pay-2"], FakeSource({"pay-1": HANG, "pay-2": 0.5}))

    async with running(guard):
        await until_refuted(scheduler, "b")
        await wait_until(_has_readings(a, 1), DEADLINE, "a's timed-out reading")

    first = a.readings[0]
    assert first.breach and first.value is None and "timed out" in first.error


# --- one sidecar is unusable --------------------------------------------------------------


# What A's readings say, per trouble. A hanging admin is cut off by the HTTP timeout (2 s)
# or, on a starved loop, by the guard's own (3 s) around the whole sample.
UNUSABLE = {
    "admin_port": ("admin_port metadata",),
    "garbage_page": ("stats unparsable",),
    "hanging_admin": ("stats unreadable (TimeoutError)", "stats sampling failed (TimeoutError)"),
}


@pytest.mark.parametrize("trouble", list(UNUSABLE))
async def test_one_unusable_sidecar_breaches_only_the_reads_that_need_it(trouble: str) -> None:
    """Real envoy-source sampling over real HTTP: pay-2's admin_port is not a port, its
    stats page is garbage, or its admin endpoint never answers. A (on pay-2) reads
    unreadable; B (on pay-1, half its requests failing) still aborts on its value; C (on
    pay-3, healthy) reads fine."""
    async with admin_servers({"pay-1": 0.5, "pay-2": 1.0, "pay-3": 1.0}) as servers:
        servers["pay-2"].garbage = trouble == "garbage_page"
        servers["pay-2"].hang = trouble == "hanging_admin"
        sidecars = [FakeSidecar(pod, metadata={"admin_port": s.port}) for pod, s in servers.items()]
        if trouble == "admin_port":
            sidecars[1].metadata["admin_port"] = "18013/tcp"
        a = FakeInjection("a", ("pay-2",))  # on the unusable sidecar
        b = FakeInjection("b", ("pay-1",))  # failing half its requests
        c = FakeInjection("c", ("pay-3",))  # healthy
        scheduler = FakeScheduler([a, b, c])
        guard = make_guard(scheduler, sidecars, None, slo=ENVOY_SLO)

        async with running(guard):
            await until_refuted(scheduler, "a", "b")
            await wait_until(_has_readable(c), DEADLINE, "a readable reading of c")

    assert any(r.value == pytest.approx(0.5) for r in b.readings)
    assert all(r.breach for r in b.readings)
    assert a.readings and all(r.breach and r.value is None for r in a.readings)
    expected = tuple(f"pay-2: {message}" for message in UNUSABLE[trouble])
    assert all(r.error.startswith(expected) for r in a.readings), a.readings[0]
    assert "c" not in scheduler.refuted
    readable = [r for r in c.readings if r.value is not None]
    assert readable and all(r.value == 1.0 and not r.breach for r in readable)


@dataclass
class StatsServer:
    """One sidecar's admin port: every scrape counts 10 more requests, `ok_share` of them
    2xx, the rest 5xx; with `garbage`, the page is not Prometheus text at all; with
    `hang`, no answer until the server shuts down."""

    ok_share: float
    port: int = 0
    garbage: bool = False
    hang: bool = False
    scrapes: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stats(self, request: web.Request) -> web.Response:
        if self.hang:
            await self.release.wait()
        if self.garbage:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/plain")
        self.scrapes += 1
        ok = round(10 * self.scrapes * self.ok_share)
        errors = 10 * self.scrapes - ok
        traffic = Traffic({"2": ok, "5": errors}, times_ms=[5] * (ok + errors))
        return web.Response(text=envoy_stats({"ingress": traffic}), content_type="text/plain")


@asynccontextmanager
async def admin_servers(shares: dict[str, float]) -> AsyncIterator[dict[str, StatsServer]]:
    servers = {pod: StatsServer(share) for pod, share in shares.items()}
    runners = []
    try:
        for server in servers.values():
            app = web.Application()
            app.router.add_get("/stats/prometheus", server.stats)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            await web.SockSite(runner, sock).start()
            server.port = sock.getsockname()[1]
        yield servers
    finally:
        for server in servers.values():
            server.release.set()
        for runner in runners:
            await runner.cleanup()


# --- the store fails ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure", ["baseline write raises", "baseline write hangs", "reading write raises"]
)
async def test_a_store_failure_never_stops_the_guard(failure: str) -> None:
    """Neither a failing nor a hung store may keep the guard from reading and aborting;
    a reading it could not store stays in memory."""
    journal = FakeJournal({"baseline write raises": "raise", "baseline write hangs": HANG}.get(
        failure, "ok"
    ))  # fmt: skip
    b = FakeInjection("b", ("pay-1",))
    scheduler = FakeScheduler([b], failing_records=failure == "reading write raises")
    guard = make_guard(scheduler, ["pay-1"], FakeSource({"pay-1": 0.5}), journal=journal)

    async with running(guard):
        await until_refuted(scheduler, "b")
        await wait_until(_has_readings(b, 3), DEADLINE, "b's readings, in memory")

    assert all(r.breach and r.value == 0.5 for r in b.readings)
    assert max(r.breach_seconds for r in b.readings) >= ABORT_AFTER - JITTER_SHARE * TICK


async def test_an_injection_forgotten_before_its_abort_does_not_stop_the_others() -> None:
    """refute raises KeyError for A (it ended and was dropped meanwhile): B still aborts."""
    a = FakeInjection("a", ("pay-1",))
    b = FakeInjection("b", ("pay-2",))
    scheduler = FakeScheduler([a, b], gone={"a"})
    guard = make_guard(scheduler, ["pay-1", "pay-2"], FakeSource({"pay-1": 0.1, "pay-2": 0.5}))

    async with running(guard):
        await until_refuted(scheduler, "b")

    assert "a" not in scheduler.refuted
    assert a.readings and all(r.breach for r in a.readings)


def _has_readable(injection: FakeInjection) -> Callable[[], Any]:
    async def check() -> bool:
        return any(r.value is not None for r in injection.readings)

    return check


def _has_readings(injection: FakeInjection, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        return len(injection.readings) >= count

    return check
