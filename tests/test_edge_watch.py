"""Watch subscribers are bounded (issue 9, item 11).

A WatchInjections client that stops reading used to grow an unbounded asyncio.Queue on
the server, one entry per transition, for as long as it stayed connected. Now each
subscriber may be `max_backlog` events behind; past that it is dropped (backlog freed,
its iterator raises WatchLagged) and `faultplane_watch_dropped_total` counts it, while
every other subscriber keeps getting every event. Publishing never raises.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest
from prometheus_client import REGISTRY

from faultplane.cli.injections import _create_and_wait
from faultplane.lifecycle.watch import DEFAULT_MAX_BACKLOG, Watch, WatchHub, WatchItem, WatchLagged
from faultplane.model.injection import Injection, Transition
from faultplane.v1 import faultplane_pb2 as pb
from tests.test_governance import Api, Start, request_by, start  # noqa: F401 (the server)

DROPPED = "faultplane_watch_dropped_total"


def item(n: int) -> WatchItem:
    """A stand-in event: the hub never looks inside what it carries."""
    return cast(tuple[Injection, Transition], (f"injection-{n}", f"change-{n}"))


def dropped() -> float:
    return REGISTRY.get_sample_value(DROPPED) or 0.0


async def test_a_reader_gets_every_event_in_order() -> None:
    hub = WatchHub(max_backlog=10)
    watch = hub.subscribe()

    for n in range(10):
        hub.publish(item(n))
    got = [await anext(watch) for _ in range(10)]

    assert got == [item(n) for n in range(10)]
    assert watch.backlog == 0 and not watch.lagged


async def test_a_reader_that_keeps_up_is_never_dropped() -> None:
    hub = WatchHub(max_backlog=3)
    watch = hub.subscribe()

    for n in range(1000):
        hub.publish(item(n))
        assert await anext(watch) == item(n)

    assert not watch.lagged and len(hub) == 1


async def test_a_stalled_subscriber_is_dropped_and_counted_others_get_everything() -> None:
    hub = WatchHub(max_backlog=100)
    stalled, reader = hub.subscribe(), hub.subscribe()
    before = dropped()
    received: list[WatchItem] = []
    peak = 0

    for n in range(50_000):
        hub.publish(item(n))
        peak = max(peak, stalled.backlog)
        received.append(await anext(reader))

    assert peak == 100  # bounded: never more than max_backlog held for it
    assert stalled.lagged and stalled.backlog == 0  # dropped, its backlog freed
    assert len(hub) == 1  # and no longer fed
    assert dropped() - before == 1  # counted once, not once per lost event
    assert received == [item(n) for n in range(50_000)]
    with pytest.raises(WatchLagged, match="more than 100 events behind"):
        await anext(stalled)


async def test_a_blocked_reader_is_woken_by_being_dropped() -> None:
    hub = WatchHub(max_backlog=2)
    watch = hub.subscribe()
    first = await _reading(watch)
    hub.publish(item(0))
    assert await first == item(0)
    waiting = await _reading(watch)  # parked on the watch when the burst comes

    for n in range(1, 4):  # one more than the backlog holds, in one loop turn
        hub.publish(item(n))

    with pytest.raises(WatchLagged):
        await waiting  # the events before the overflow are freed too: re-list
    assert watch.lagged and watch.backlog == 0


async def test_close_ends_a_pending_read_and_unsubscribes() -> None:
    hub = WatchHub()
    watch = hub.subscribe()
    pending = await _reading(watch)

    watch.close()

    with pytest.raises(StopAsyncIteration):
        await pending
    assert len(hub) == 0
    hub.publish(item(1))  # offers to a closed watch are ignored
    assert watch.backlog == 0


async def test_publish_never_raises_even_into_a_dropped_or_closed_watch() -> None:
    hub = WatchHub(max_backlog=1)
    dropped_watch, closed_watch = hub.subscribe(), hub.subscribe()
    closed_watch.close()

    for n in range(5):
        hub.publish(item(n))
        dropped_watch.offer(item(n))
        closed_watch.offer(item(n))

    assert dropped_watch.lagged and dropped_watch.backlog == 0


def test_max_backlog_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WatchHub(max_backlog=0).subscribe()


async def _reading(watch: Watch) -> asyncio.Task[WatchItem]:
    """A task blocked in `anext(watch)` (it has run up to its wait)."""
    task: asyncio.Task[WatchItem] = asyncio.ensure_future(anext(watch))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # one loop turn: the task starts and parks on the watch
    assert not task.done()
    return task


# --- through the real API: a WatchInjections client that never reads -----------------

# Publishing stops here if the subscriber is never dropped (the bug): far more than the
# backlog plus what gRPC's flow-control window holds (about 600 events when measured).
PUBLISH_CAP = 20 * DEFAULT_MAX_BACKLOG


async def _stall_a_watcher(api: Api) -> tuple[grpc.aio.UnaryStreamCall, int]:
    """Opens WatchInjections, never reads it, and publishes transitions until the server
    drops the subscriber; returns the call and how many were published."""
    created = await api.call("CreateInjection", request_by("alice"), "alice")
    injection = api.server.scheduler.get(created.id)
    change = injection.transitions[0]
    call = api.stub.WatchInjections(
        pb.WatchInjectionsRequest(), metadata=[("authorization", f"Bearer {api.tokens['vic']}")]
    )
    await call.initial_metadata()  # subscribed
    before = dropped()
    published = 0
    while dropped() == before:
        assert published < PUBLISH_CAP, "a watcher that never reads was never dropped"
        # The scheduler's own publish path (each state change calls it), one event per
        # loop turn so the stream handler writes all that flow control lets it.
        api.server.scheduler._publish(injection, change)
        published += 1
        await asyncio.sleep(0)
    return call, published


async def test_a_watch_client_that_never_reads_is_dropped_not_buffered(
    start: Start,  # noqa: F811
) -> None:
    api = await start()

    call, published = await _stall_a_watcher(api)
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in call:
            received += 1

    # What the handler wrote before the drop reaches the client; the backlog behind it
    # (at most DEFAULT_MAX_BACKLOG events) was freed, not delivered late.
    assert received <= published - DEFAULT_MAX_BACKLOG
    assert "fell more than 1000 events behind" in (ended.value.details() or "")


async def test_a_dropped_watch_ends_with_resource_exhausted(
    start: Start,  # noqa: F811
) -> None:
    api = await start()

    call, _ = await _stall_a_watcher(api)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in call:
            pass

    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- the CLI's own watchers survive being dropped ---------------------------------------


class _Dropped(grpc.RpcError):
    """What a gRPC stream raises when the server drops the watcher."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "watch dropped: the subscriber fell more than 1000 events behind"


class _Events:
    """A WatchInjections call: subscribed at once; its events, or a drop."""

    def __init__(self, events: list[pb.InjectionEvent] | None) -> None:
        self._events = events

    def initial_metadata(self) -> tuple[()]:
        return ()

    def cancel(self) -> None:
        pass

    def __iter__(self) -> Any:
        if self._events is None:
            raise _Dropped()
        return iter(self._events)


class _Stub:
    """The API as `inject` sees it: the first watch is dropped, the second delivers."""

    def __init__(self) -> None:
        self.created = 0
        active = pb.Injection(id="inj-1", state=pb.ACTIVE)
        self._watches = [_Events(None), _Events([pb.InjectionEvent(injection=active)])]

    def WatchInjections(self, request: pb.WatchInjectionsRequest) -> _Events:  # noqa: N802
        return self._watches.pop(0)

    def CreateInjection(self, request: pb.InjectionRequest, timeout: float) -> pb.Injection:  # noqa: N802
        self.created += 1
        return pb.Injection(id="inj-1", state=pb.PENDING)

    def GetInjection(self, request: pb.GetInjectionRequest, timeout: float) -> pb.Injection:  # noqa: N802
        return pb.Injection(id=request.id, state=pb.PENDING)


def test_inject_resubscribes_when_its_watch_is_dropped() -> None:
    stub = _Stub()

    injection = _create_and_wait(stub, pb.InjectionRequest())  # type: ignore[arg-type]

    assert injection.state == pb.ACTIVE
    assert stub.created == 1  # created once, not again on resubscribing
