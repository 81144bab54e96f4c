"""Recurring experiments in a running server (issue 14), with fake sidecars, real gRPC,
the real CLI and a clock the test moves: each occurrence is its own queued injection,
cron follows local time across a DST change, a restart neither repeats nor loses an
occurrence, pause skips what falls due meanwhile, and `schedules ls` shows the history
with its held-rate."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from faultplane.lifecycle.lifecycle import HELD, REFUTED
from faultplane.lifecycle.schedules import held_rate
from faultplane.model.mesh import Mesh
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import injection_request, rpc_error, run_cli, wait_state
from tests.test_queue import ABORT, ALL_PAYMENTS, HOUR, Clock, request, serve

pytestmark = pytest.mark.asyncio


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def experiment_file(tmp_path: Path, **top: object) -> str:
    path = tmp_path / "experiment.json"
    document = json_format.MessageToDict(request(**top), preserving_proto_field_name=True)
    path.write_text(json.dumps(document))
    return str(path)


async def test_cron_across_dst_is_queued_exactly_once_across_a_restart(
    mesh: Mesh, tmp_path: Path
) -> None:
    clock = Clock()
    clock.now = utc("2027-03-26T12:00:00")  # Friday; Berlin moves to CEST on Sunday the 28th
    db = tmp_path / "faultplane.db"
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock, db)
        api = ("--api", f"127.0.0.1:{server.api_port}")
        code, out, err = await run_cli(
            "schedule", "-f", experiment_file(tmp_path, duration_seconds=600), "--cron",
            "0 11 * * *", "--tz", "Europe/Berlin", "--name", "daily", "--json", *api,
        )  # fmt: skip
        assert code == 0, err
        created = json.loads(out)
        sid = created["id"]
        assert created["next_at"] == "2027-03-27T10:00:00Z"  # 11:00 CET

        clock.now = utc("2027-03-27T09:30:00")  # within the hour before: queued, visible
        assert await server.scheduler.schedules.fire() == [f"{sid}-20270327T1000Z"]
        saturday = await stub.GetInjection(pb.GetInjectionRequest(id=f"{sid}-20270327T1000Z"))
        assert saturday.state == pb.QUEUED
        assert saturday.waiting_reason == "not before 2027-03-27 10:00 UTC"
        rows = (await stub.ListQueue(pb.ListQueueRequest())).rows
        assert [(r.injection_id, r.status) for r in rows] == [(saturday.id, "starts")]
        assert await server.scheduler.schedules.fire() == []  # nothing due twice

        clock.now = utc("2027-03-28T08:30:00")  # Sunday, 10:30 CEST
        assert await server.scheduler.schedules.fire() == [f"{sid}-20270328T0900Z"]  # 11 CEST
        sunday = await stub.GetInjection(pb.GetInjectionRequest(id=f"{sid}-20270328T0900Z"))
        assert sunday.request.not_before.ToJsonString() == "2027-03-28T09:00:00Z"
        assert sunday.request.not_after.ToJsonString() == "2027-03-29T09:00:00Z"

    async with AsyncExitStack() as stack:  # a restart at the same instant: nothing new
        server, stub = await serve(stack, mesh, clock, db)
        assert await server.scheduler.schedules.fire() == []
        listed = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
        assert [o.injection_id for o in listed[0].history] == [sunday.id, saturday.id]
        assert listed[0].last_fired.ToJsonString() == "2027-03-28T09:00:00Z"
        ours = (await stub.ListInjections(pb.ListInjectionsRequest())).injections
        assert sorted(i.id for i in ours if i.id.startswith(sid)) == [saturday.id, sunday.id]

    clock.now = utc("2027-03-29T08:30:00")  # down over night: Monday's is due at start
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock, db)
        (schedule,) = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
        assert schedule.history[0].injection_id == f"{sid}-20270329T0900Z"
        assert await server.scheduler.schedules.fire() == []
        api = ("--api", f"127.0.0.1:{server.api_port}")
        code, _, err = await run_cli("schedules", "pause", sid, *api)
        assert code == 0, err
        clock.now = utc("2027-03-31T08:30:00")
        assert await server.scheduler.schedules.fire() == []  # paused: Tuesday's skipped
        code, _, err = await run_cli("schedules", "resume", sid, *api)
        assert code == 0, err
        (schedule,) = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
        ids = [o.injection_id for o in schedule.history]
        assert ids[0] == f"{sid}-20270331T0900Z" and f"{sid}-20270330T0900Z" not in ids
        code, out, err = await run_cli("schedules", "ls", *api)
        assert code == 0, err
        assert "daily" in out and "cron '0 11 * * *' (Europe/Berlin)" in out, out


async def test_schedules_ls_shows_verdicts_and_the_held_rate(mesh: Mesh, tmp_path: Path) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock)
        created = await stub.CreateSchedule(pb.CreateScheduleRequest(
            experiment=request(duration_seconds=1), every="1h", name="hourly",
        ))  # fmt: skip
        ended = {pb.COMPLETED, pb.ABORTED, pb.FAILED}
        for _ in range(2):
            # The next occurrence is queued an hour ahead; when the clock reaches it, it
            # starts, runs its second, and the next one is queued.
            latest = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules[0]
            clock.now += HOUR
            server.scheduler.replan()
            done = await wait_state(stub, latest.history[0].injection_id, ended, 60)
            assert done.state == pb.COMPLETED, done.reason
            await server.scheduler.schedules.fire()
        (hourly,) = (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
        assert hourly.id == created.id and hourly.recurrence.startswith("every 1h from ")
        assert [pb.State.Name(o.state) for o in hourly.history] == [
            "QUEUED", "COMPLETED", "COMPLETED",
        ]  # fmt: skip
        # Fake sidecars serve no stats: a one-second run is never read, so inconclusive,
        # which the held-rate does not count (held_rate's own test counts real verdicts).
        assert all(o.verdict.startswith("inconclusive") for o in hourly.history[1:])
        assert (hourly.held_rate, hourly.judged) == (0.0, 0)
        code, out, err = await run_cli(
            "schedules", "ls", "--api", f"127.0.0.1:{server.api_port}"
        )  # fmt: skip
        assert code == 0, err
        assert "hourly" in out and "QUEUED inconclusive inconclusive" in out, out


async def test_the_held_rate_counts_only_judged_verdicts() -> None:
    verdicts = [HELD, REFUTED, HELD, "inconclusive: never started", "", HELD]
    assert held_rate(verdicts) == (0.75, 4)
    assert held_rate(["inconclusive: the steady state was never read"]) == (0.0, 0)


async def test_a_schedule_is_validated_naming_the_field(mesh: Mesh) -> None:
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, Clock())
        cases = [
            ({"every": "1d", "cron": "0 11 * * *"}, "every: give exactly one of every or cron"),
            ({"cron": "0 11 * *"}, "cron: expected five fields (m h dom mon dow), got '0 11 * *'"),
            ({"cron": "0 11 * * *", "tz": "Mars/Base"}, "tz: unknown time zone 'Mars/Base'"),
            ({"every": "soon"}, "every: expected a number and a unit (s, m, h, d, w), got 'soon'"),
        ]
        for fields, message in cases:
            call = stub.CreateSchedule(pb.CreateScheduleRequest(experiment=request(), **fields))
            error = await rpc_error(call)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
            assert error.details() == message
        bad = injection_request(target={**ALL_PAYMENTS, "service": "nope"}, fault=ABORT)
        error = await rpc_error(
            stub.CreateSchedule(pb.CreateScheduleRequest(experiment=bad, every="1d"))
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("experiment.target.service: "), error.details()
        assert not (await stub.ListSchedules(pb.ListSchedulesRequest())).schedules
