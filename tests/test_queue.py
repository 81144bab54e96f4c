"""The queue in a running server (issue 14, phase 2), in process with fake sidecars and
a clock the test moves: an overlapping request with on_conflict=queue waits QUEUED with
the reason it waits and starts when the blocker ends; not_before holds it until then;
not_after expires it; abort cancels it; a restart re-plans the persisted queue.

Real gRPC over loopback and real ADS streams; the clock only stands in for hours of
waiting. Real Envoy traffic is in test_queue_envoy.py."""

from __future__ import annotations

import json
import re
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from faultplane.demo.processes import wait_until
from faultplane.model.mesh import Mesh
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import server_config
from tests.fake_sidecar import start_with_sidecars
from tests.helpers import injection_request, rpc_error, run_cli, wait_state

pytestmark = pytest.mark.asyncio

ALL_PAYMENTS = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}
HOUR = 3600.0


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def serve(
    stack: AsyncExitStack, mesh: Mesh, clock: Clock, db: Path | None = None
) -> tuple[ControlServer, faultplane_pb2_grpc.FaultServiceStub]:
    pods = list(mesh.services["payments-api"].pods)
    config = server_config(mesh, clock=clock, db_path=db)
    server, channel = await start_with_sidecars(stack, config, pods)
    return server, faultplane_pb2_grpc.FaultServiceStub(channel)


def request(**top: object) -> pb.InjectionRequest:
    return injection_request(target=ALL_PAYMENTS, fault=ABORT, **top)


async def test_an_overlapping_request_waits_queued_and_starts_when_the_first_ends(
    mesh: Mesh,
) -> None:
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, Clock())
        first = await stub.CreateInjection(request(duration_seconds=600), timeout=30)
        await wait_state(stub, first.id, {pb.ACTIVE})
        # The default still refuses an overlap.
        refused = await rpc_error(stub.CreateInjection(request(), timeout=30))
        assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
        second = await stub.CreateInjection(request(on_conflict="ON_CONFLICT_QUEUE"), timeout=30)
        assert second.state == pb.QUEUED
        assert re.fullmatch(
            rf"waits for {first.id} \(same sidecar payments-api-\d, same scope\)",
            second.waiting_reason,
        ), second.waiting_reason
        listed = await stub.ListInjections(pb.ListInjectionsRequest(states=[pb.QUEUED]))
        assert [i.id for i in listed.injections] == [second.id]
        assert listed.injections[0].waiting_reason == second.waiting_reason

        await stub.AbortInjection(pb.AbortInjectionRequest(id=first.id, reason="done"))
        started = await wait_state(stub, second.id, {pb.ACTIVE})
        assert started.waiting_reason == ""
        assert sorted(started.targets) == sorted(first.targets)
        assert [pb.State.Name(t.to_state) for t in started.transitions][:3] == [
            "QUEUED", "PENDING", "ACTIVE",
        ]  # fmt: skip


async def test_not_before_holds_it_until_the_clock_reaches_it(mesh: Mesh) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock)
        later = clock.now + HOUR
        queued = await stub.CreateInjection(request(not_before=stamp(later)), timeout=30)
        assert queued.state == pb.QUEUED
        assert queued.waiting_reason.startswith("not before "), queued.waiting_reason
        server.scheduler.replan()  # still too early: nothing moves
        assert server.scheduler.get(queued.id).state.value == "QUEUED"

        clock.now = later
        server.scheduler.replan()  # what the timer does at the packer's next wake
        active = await wait_state(stub, queued.id, {pb.ACTIVE})
        assert len(active.targets) == 4


async def test_a_request_not_started_by_not_after_expires(mesh: Mesh) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock)
        queued = await stub.CreateInjection(
            request(not_before=stamp(clock.now + HOUR), not_after=stamp(clock.now + 2 * HOUR)),
            timeout=30,
        )
        clock.now += 3 * HOUR
        server.scheduler.replan()
        expired = await wait_state(stub, queued.id, {pb.EXPIRED})
        assert expired.reason.startswith("not started by its deadline"), expired.reason
        assert not expired.targets


async def test_abort_cancels_a_queued_request(mesh: Mesh) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock)
        queued = await stub.CreateInjection(request(not_before=stamp(clock.now + HOUR)))
        aborted = await stub.AbortInjection(pb.AbortInjectionRequest(id=queued.id, reason="no"))
        assert aborted.state == pb.ABORTED
        clock.now += 2 * HOUR
        server.scheduler.replan()  # a cancelled one never starts
        assert server.scheduler.get(queued.id).state.value == "ABORTED"


async def test_queue_terms_are_validated_naming_the_field(mesh: Mesh) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, clock)
        bad = request(not_before=stamp(clock.now + HOUR), not_after=stamp(clock.now), priority=5000)
        error = await rpc_error(stub.CreateInjection(bad, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not_after: must be later than not_before" in (error.details() or "")
        assert "priority: must be between -1000 and 1000, not 5000" in (error.details() or "")


async def test_a_restart_keeps_the_queue_and_replans_it(mesh: Mesh, tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "faultplane.db"
    later = clock.now + HOUR
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, clock, db)
        queued = await stub.CreateInjection(request(not_before=stamp(later)), timeout=30)
        reason = queued.waiting_reason
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock, db)
        reloaded = await stub.GetInjection(pb.GetInjectionRequest(id=queued.id))
        assert reloaded.state == pb.QUEUED
        assert reloaded.waiting_reason == reason
        clock.now = later
        server.scheduler.replan()
        await wait_state(stub, queued.id, {pb.ACTIVE})


async def test_cli_inject_queue_and_the_documents_short_spelling_both_queue(
    mesh: Mesh, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, Clock())
        first = await stub.CreateInjection(request(duration_seconds=600), timeout=30)
        api = ("--api", f"127.0.0.1:{server.api_port}")
        document = json_format.MessageToDict(request(), preserving_proto_field_name=True)
        plain, short = tmp_path / "plain.json", tmp_path / "short.json"
        plain.write_text(json.dumps(document))
        short.write_text(json.dumps({**document, "on_conflict": "queue"}))

        code, out, err = await run_cli("inject", "-f", str(plain), "--queue", "--json", *api)
        assert code == 0, err
        assert json.loads(out)["state"] == "QUEUED"
        assert json.loads(out)["waiting_reason"].startswith(f"waits for {first.id} ")
        code, out, err = await run_cli("inject", "-f", str(short), "--json", *api)
        assert code == 0, err
        assert json.loads(out)["state"] == "QUEUED"
        # Without either, the overlap is refused as before (exit 1, the gRPC code named).
        code, _, err = await run_cli("inject", "-f", str(plain), *api)
        assert code == 1 and "FAILED_PRECONDITION" in err, err


async def test_after_a_restart_a_queued_request_still_waits_for_the_resumed_one(
    mesh: Mesh, tmp_path: Path
) -> None:
    db = tmp_path / "faultplane.db"
    clock = Clock()
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, clock, db)
        first = await stub.CreateInjection(request(duration_seconds=600), timeout=30)
        await wait_state(stub, first.id, {pb.ACTIVE})
        queued = await stub.CreateInjection(request(on_conflict="ON_CONFLICT_QUEUE"))
        assert queued.state == pb.QUEUED
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, clock, db)
        assert (await stub.GetInjection(pb.GetInjectionRequest(id=first.id))).state == pb.ACTIVE
        # Re-planned at start, and again once the sidecars are back: the resumed one
        # blocks it. It never starts beside it.
        blocked = f"waits for {first.id} (same sidecar "

        async def blocked_by_first() -> bool:
            now = await stub.GetInjection(pb.GetInjectionRequest(id=queued.id))
            assert now.state == pb.QUEUED, pb.State.Name(now.state)
            return now.waiting_reason.startswith(blocked)

        await wait_until(blocked_by_first, 20, "the queued one to name the resumed one")
        await stub.AbortInjection(pb.AbortInjectionRequest(id=first.id, reason="done"))
        await wait_state(stub, queued.id, {pb.ACTIVE})
