"""The dashboard's scheduler views over real HTTP against a real control server (gRPC
over loopback, fake sidecars over real ADS; no browser, no Envoy): the event stream's
blackouts (named in the snapshot, sent again when one is added or removed, and when one
ends, by the server's timer with no call made), and the schedules page with its
Pause/Resume/Remove actions (CSRF, the role table, the audit), blackouts and policy.
"""

# ruff: noqa: F811 (`start` is a fixture imported from test_governance)
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2

from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import rpc_error
from tests.test_governance import Start, audit_entries, request_by, start  # noqa: F401
from tests.test_web_auth import browser, dashboard, log_in
from tests.test_web_pages import events

STREAM_BOUND = 30.0  # seconds; generous for a loaded 2-core machine


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def one_off(name: str, start: datetime, end: datetime) -> pb.AddBlackoutRequest:
    return pb.AddBlackoutRequest(name=name, start=stamp(start), end=stamp(end))


async def test_the_stream_names_a_blackout_while_it_is_in_effect_and_when_it_ends(
    start: Start,
) -> None:
    api, base = await dashboard(start)
    async with browser() as session:
        await log_in(session, base, api.tokens["vic"])
        stream = events(session, f"{base}/events")
        name, snapshot = await anext(stream)
        assert name == "snapshot" and snapshot["blackouts"] == {"active": [], "upcoming": []}

        now = datetime.now(UTC)
        ends = now + timedelta(seconds=10)
        added = await api.call("AddBlackout", one_off("settlement", now, ends), "alice")
        name, state = await anext(stream)  # pushed after AddBlackout, before anything else
        assert name == "blackouts", (name, state)
        [active] = state["active"]
        assert active["id"] == added.id and active["name"] == "settlement"
        assert abs(datetime.fromisoformat(active["ends"]) - ends) < timedelta(seconds=1)
        assert (await anext(stream))[0] == "scheduling"

        # It ends on its own: the server's timer sends the change at that instant.
        deadline = time.monotonic() + STREAM_BOUND
        async for name, state in stream:
            if name == "blackouts":
                assert state["active"] == []
                assert datetime.now(UTC) >= ends - timedelta(seconds=0.1)  # not early
                break
            assert time.monotonic() < deadline, "the blackout's end was never sent"

        # One beginning within the next hours is listed ahead; removing it is sent too.
        later = await api.call(
            "AddBlackout",
            one_off("deploy", now + timedelta(hours=1), now + timedelta(hours=2)),
            "alice",
        )
        name, state = await anext(stream)
        assert name == "blackouts" and state["active"] == []
        assert [b["id"] for b in state["upcoming"]] == [later.id]
        await api.call("RemoveBlackout", pb.RemoveBlackoutRequest(id=later.id), "root")
        async for name, state in stream:
            if name == "blackouts":
                assert state == {"active": [], "upcoming": []}
                break
        await stream.aclose()


async def test_the_schedules_page_pauses_resumes_and_removes_as_the_role_table_says(
    start: Start,
) -> None:
    api, base = await dashboard(start)
    later = datetime.now(UTC) + timedelta(hours=1)  # no occurrence fires during the test
    created = await api.call(
        "CreateSchedule",
        pb.CreateScheduleRequest(
            experiment=request_by("alice", duration_seconds=60),
            every="1h",
            start=stamp(later),
            name="hourly-check",
        ),
        "alice",
    )
    weekly = pb.AddBlackoutRequest(name="weekend", weekly="Sat 00:00 - Mon 00:00", tz="UTC")
    await api.call("AddBlackout", weekly, "alice")
    await api.call("SetPolicy", pb.SchedulingPolicy(cooldown_seconds=3600, max_fleet=3), "root")
    async with browser() as viewer, browser() as operator:
        async with viewer.get(f"{base}/schedules") as reply:  # no session yet
            assert reply.url.path == "/login"
        no_session = {"id": created.id, "action": "pause"}
        async with viewer.post(f"{base}/actions/schedule", json=no_session) as reply:
            assert reply.status == 401
        await log_in(viewer, base, api.tokens["vic"])
        async with viewer.get(f"{base}/schedules") as reply:
            seen = await reply.text()
        assert reply.status == 200
        shown = (created.id, "hourly-check", "every 1h", "▶ active", "weekend (Sat 00:00",
                 "3600 s between starts", "no limit", "faultplane blackout add")  # fmt: skip
        for expected in shown:
            assert expected in seen, expected
        assert 'data-action="pause"' not in seen and "may not change schedules" in seen

        csrf = await log_in(operator, base, api.tokens["alice"])
        async with operator.get(f"{base}/schedules") as reply:
            page = await reply.text()
        assert f'data-action="pause" data-id="{created.id}"' in page
        assert 'data-action="resume"' not in page

        body = {"id": created.id, "action": "pause"}
        async with operator.post(f"{base}/actions/schedule", json=body) as reply:
            assert reply.status == 403  # no CSRF token: refused before any call
        listed = await api.call("ListSchedules", pb.ListSchedulesRequest(), "root")
        assert not listed.schedules[0].paused
        headers = {"X-CSRF-Token": csrf}
        bad = {"id": created.id, "action": "explode"}
        async with operator.post(f"{base}/actions/schedule", json=bad, headers=headers) as reply:
            assert reply.status == 400
            assert (await reply.json())["error"].startswith("action: must be one of pause")
        viewer_csrf = await log_in(viewer, base, api.tokens["vic"])
        async with viewer.post(
            f"{base}/actions/schedule", json=body, headers={"X-CSRF-Token": viewer_csrf}
        ) as reply:
            assert reply.status == 403 and "viewer" in (await reply.json())["error"]

        banners = events(viewer, f"{base}/events?only=changes")  # the schedules page's
        name, snapshot = await anext(banners)
        assert name == "snapshot" and "injections" not in snapshot and "blackouts" in snapshot
        async with operator.post(f"{base}/actions/schedule", json=body, headers=headers) as reply:
            assert reply.status == 200 and (await reply.json())["schedule"]["paused"] is True
        assert [(await anext(banners))[0] for _ in range(2)] == ["blackouts", "scheduling"]
        await banners.aclose()
        async with operator.get(f"{base}/schedules") as reply:
            page = await reply.text()
        assert "⏸ paused" in page and f'data-action="resume" data-id="{created.id}"' in page
        resume = {"id": created.id, "action": "resume"}
        async with operator.post(f"{base}/actions/schedule", json=resume, headers=headers) as r:
            assert r.status == 200 and "paused" not in (await r.json())["schedule"]
        remove = {"id": created.id, "action": "remove"}
        async with operator.post(f"{base}/actions/schedule", json=remove, headers=headers) as r:
            assert r.status == 200
        async with operator.get(f"{base}/schedules") as reply:
            assert created.id not in await reply.text()

    calls = [(e["method"], e["principal"], e["outcome"]) for e in await audit_entries(api)
             if e.get("method", "").endswith("Schedule")]  # fmt: skip
    for call in (("PauseSchedule", "vic", "PERMISSION_DENIED"), ("PauseSchedule", "alice", "OK"),
                 ("ResumeSchedule", "alice", "OK"), ("RemoveSchedule", "alice", "OK")):  # fmt: skip
        assert call in calls, (call, calls)


async def test_the_watch_tells_of_each_scheduling_change_and_nothing_of_a_refused_one(
    start: Start,
) -> None:
    """WatchInjections with INJECTION_EVENT_SCHEDULING, as any client sees it: one event
    per change (even narrowed to one injection: the calendar concerns all), none for a
    call the role table refused."""
    api = await start()
    metadata = [("authorization", f"Bearer {api.tokens['vic']}")]
    kinds = [pb.INJECTION_EVENT_SCHEDULING, pb.INJECTION_EVENT_FREEZE]
    watch = api.stub.WatchInjections(
        pb.WatchInjectionsRequest(id="inj-other", kinds=kinds), metadata=metadata
    )
    await watch.initial_metadata()  # subscribed
    weekly = pb.AddBlackoutRequest(name="weekend", weekly="Sat 00:00 - Mon 00:00", tz="UTC")
    refused = await rpc_error(api.call("AddBlackout", weekly, "vic"))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    await api.call("Freeze", pb.FreezeRequest(reason="a marker after the refusal"), "root")
    added = await api.call("AddBlackout", weekly, "alice")
    await api.call("SetPolicy", pb.SchedulingPolicy(max_fleet=2), "root")
    await api.call("RemoveBlackout", pb.RemoveBlackoutRequest(id=added.id), "root")
    seen = []
    async with asyncio.timeout(STREAM_BOUND):
        async for event in watch:
            seen.append(event)
            if len(seen) == 4:
                break
    watch.cancel()
    # The freeze first: the refused AddBlackout published nothing before it.
    assert [e.kind for e in seen] == [pb.INJECTION_EVENT_FREEZE] + [
        pb.INJECTION_EVENT_SCHEDULING
    ] * 3
    assert all(not e.HasField("injection") and not e.injection_id for e in seen[1:])
