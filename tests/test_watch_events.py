"""The watch's event kinds and GetInjectionPlan, over real gRPC against a real server
whose fake sidecars ACK over real ADS (tests/fake_sidecar.py): a WatchInjections that
asks for readings gets each one as the guard records it, one that asks for the freeze
gets it set, lifted, and run out at its `until` (timed, not polled); one that asks for
nothing gets transitions only, as before; and the plan of a live injection is what its
targets were sent, where PlanInjection of its own request is refused as an overlap.
"""

# ruff: noqa: F811 (`start` is a fixture imported from test_governance)
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from faultplane.lifecycle.approval import Freeze
from faultplane.lifecycle.events import EventHub, FreezeEvent
from faultplane.notify.targets import NotifyTarget
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import rpc_error, until, wait_state
from tests.test_governance import Api, Start, _As, request_by, start  # noqa: F401
from tests.test_notify_delivery import Receiver

READING, FREEZE = pb.INJECTION_EVENT_READING, pb.INJECTION_EVENT_FREEZE
TRANSITION = pb.INJECTION_EVENT_TRANSITION


@asynccontextmanager
async def watching(
    api: Api, *kinds: int, only: str = ""
) -> AsyncIterator[asyncio.Queue[pb.InjectionEvent]]:
    """A WatchInjections as the viewer, subscribed (headers in) before this yields; its
    events land in the queue."""
    metadata = [("authorization", f"Bearer {api.tokens['vic']}")]
    call = api.stub.WatchInjections(
        pb.WatchInjectionsRequest(id=only, kinds=kinds), metadata=metadata
    )
    await call.initial_metadata()
    events: asyncio.Queue[pb.InjectionEvent] = asyncio.Queue()

    async def read() -> None:
        async for event in call:
            events.put_nowait(event)

    reader = asyncio.create_task(read())
    try:
        yield events
    finally:
        call.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def next_event(events: asyncio.Queue[pb.InjectionEvent], seconds: float = 15):
    return await asyncio.wait_for(events.get(), seconds)


async def test_readings_come_as_the_guard_records_them_and_only_for_the_watched_one(
    start: Start,
) -> None:
    api = await start(guard_tick=0.2)
    first = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")
    egress = {"selector": "", "max_pods": 4, "upstream": "fraud-scoring"}
    other = await api.call(  # the same sidecars' calls to fraud-scoring: read as well
        "CreateInjection", request_by("alice", duration_seconds=600, target=egress), "alice"
    )
    async with watching(api, READING, TRANSITION, only=first.id) as events:
        await wait_state(_As(api, "alice"), first.id, {pb.ACTIVE})
        await wait_state(_As(api, "alice"), other.id, {pb.ACTIVE})
        readings = []
        while len(readings) < 2:
            event = await next_event(events)
            assert event.injection_id == first.id
            if event.kind == READING:
                readings.append(event.reading)
    # The fake sidecars serve no stats: each reading is the guard's "unreadable" one.
    assert all(r.error and not r.HasField("value") for r in readings)
    recorded = await api.call("GetInjection", pb.GetInjectionRequest(id=first.id), "vic")
    stamps = [r.at.ToNanoseconds() for r in recorded.readings]
    assert all(r.at.ToNanoseconds() in stamps for r in readings)  # the very readings kept
    assert readings[0].at.ToNanoseconds() < readings[1].at.ToNanoseconds()


async def test_freeze_set_lifted_and_lapsed_each_come_once_and_plain_watches_stay_as_before(
    start: Start,
) -> None:
    api = await start()
    async with watching(api, FREEZE) as freezes, watching(api) as plain:
        soon = time.time() + 0.8
        await api.call("Freeze", pb.FreezeRequest(until=soon, reason="INC-6"), "root")
        until = time.time() + 2.0  # replaces the first before it runs out
        await api.call("Freeze", pb.FreezeRequest(until=until, reason="INC-7"), "root")
        first, frozen = await next_event(freezes), await next_event(freezes)
        assert first.kind == FREEZE and first.freeze.reason == "INC-6"
        assert frozen.freeze.frozen and frozen.freeze.reason == "INC-7"
        lapsed = await next_event(freezes)  # at its until, without anyone asking
        assert not lapsed.freeze.frozen and lapsed.freeze.lapsed
        assert time.time() >= until - 0.05  # the replaced freeze's lapse was never told

        await api.call("Freeze", pb.FreezeRequest(reason="INC-8"), "root")
        assert (await next_event(freezes)).freeze.reason == "INC-8"
        await api.call("Unfreeze", pb.UnfreezeRequest(), "root")
        lifted = await next_event(freezes)
        assert not lifted.freeze.frozen and not lifted.freeze.lapsed
        await api.call("Unfreeze", pb.UnfreezeRequest(), "root")  # nothing to lift: no news

        created = await api.call("CreateInjection", request_by("alice"), "alice")
        first = await next_event(plain)  # a plain watch never saw the freezes
        assert first.kind == TRANSITION and first.injection.id == created.id
        assert first.transition.to_state == pb.PENDING
        assert freezes.empty()


async def test_an_unknown_event_kind_is_refused_naming_the_field(start: Start) -> None:
    api = await start()
    call = api.stub.WatchInjections(
        pb.WatchInjectionsRequest(kinds=[READING, 9]),
        metadata=[("authorization", f"Bearer {api.tokens['vic']}")],
    )
    error = await rpc_error(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("kinds: unknown event kind 9")


async def test_a_notifier_tells_of_a_freeze_that_runs_out(start: Start) -> None:
    receiver = Receiver()
    await receiver.up()
    try:
        api = await start(notify=(NotifyTarget(receiver.url),))
        await api.call("Freeze", pb.FreezeRequest(until=time.time() + 1.0, reason="x"), "root")
        await until(lambda: len(receiver.bodies) >= 2, 15, "the freeze and its lapse")
        assert receiver.events() == ["frozen", "unfrozen"]
        assert receiver.bodies[1]["reason"] == "the freeze lapsed"
    finally:
        await receiver.down()


async def test_the_plan_of_a_live_injection_is_what_each_target_was_sent(start: Start) -> None:
    api = await start()
    request = request_by("alice", duration_seconds=600, fault={"type": "abort", "http_status": 418})
    created = await api.call("CreateInjection", request, "alice")
    await wait_state(_As(api, "alice"), created.id, {pb.ACTIVE})

    overlap = await rpc_error(api.call("PlanInjection", request, "alice"))
    assert overlap.code() == grpc.StatusCode.FAILED_PRECONDITION  # why this RPC exists
    plan = await api.call("GetInjectionPlan", pb.GetInjectionPlanRequest(id=created.id), "vic")
    assert sorted(s.sidecar for s in plan.sidecars) == sorted(created.targets)
    assert list(plan.targets) == list(created.targets) and not plan.unrendered
    for sidecar in plan.sidecars:
        assert re.search(r'"http_status": ?418', sidecar.route_config_json)  # its own fault
        assert any(created.id in key for key in sidecar.runtime)
        assert all(value > 0 for value in sidecar.runtime.values())  # switched on

    await api.call("AbortInjection", pb.AbortInjectionRequest(id=created.id), "alice")
    ended = await api.call("GetInjectionPlan", pb.GetInjectionPlanRequest(id=created.id), "vic")
    assert sorted(s.sidecar for s in ended.sidecars) == sorted(created.targets)

    missing = await rpc_error(
        api.call("GetInjectionPlan", pb.GetInjectionPlanRequest(id="inj-nope"), "vic")
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    blank = await rpc_error(api.call("GetInjectionPlan", pb.GetInjectionPlanRequest(), "vic"))
    assert blank.code() == grpc.StatusCode.INVALID_ARGUMENT and "id: required" in blank.details()


async def test_a_reloaded_freeze_is_timed_to_lapse_without_being_told_as_new() -> None:
    """What a restart does with the freeze it reloads (Scheduler.restore)."""
    hub = EventHub()
    watch = hub.subscribe_kinds({"freeze"})
    reloaded = Freeze(until=time.time() + 0.3, reason="INC-9", by="ananya", at=time.time())
    hub.time_lapse(reloaded, time.time())
    event = await asyncio.wait_for(anext(aiter(watch)), 10)
    assert event == FreezeEvent(None, reloaded, lapsed=True)
    assert time.time() >= reloaded.until and watch.backlog == 0
    hub.close()
    watch.close()
