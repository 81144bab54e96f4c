"""Restart survival: a SIGKILLed control server, restarted on the same store, resumes or
finishes every injection correctly, with real Envoy sidecars reconnecting."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.render.faults import INJECTION_HEADER
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import faulted_routes, injection_request, send, wait_state

pytestmark = pytest.mark.asyncio(loop_scope="module")

ABORT_ALL_PAYMENTS = {
    "target": {"selector": "", "max_pods": 4, "upstream": None},
    "fault": {"type": "abort", "http_status": 503},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--deadman-ttl", "3", "--ack-timeout", "20", "--baseline-min-seconds", "0")
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), load=False, server_args=args
    ) as mesh_run:
        yield mesh_run


async def call(run: MeshRun, method: str, request):  # one call on a fresh channel
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        return await getattr(faultplane_pb2_grpc.FaultServiceStub(channel), method)(
            request, timeout=30
        )


async def crash_and_restart(run: MeshRun) -> None:
    run.restart_server(kill=True)
    await run.wait_server_healthy()


async def reconverged(run: MeshRun) -> bool:
    """Every sidecar connected to the current server and running what it was sent."""
    sidecars = (await call(run, "ListSidecars", pb.ListSidecarsRequest())).sidecars
    return len(sidecars) == len(run.mesh.pods) and all(
        s.connected and s.xds and all(t.version_acked == t.version_sent for t in s.xds)
        for s in sidecars
    )


def ingress(run: MeshRun, pod: str) -> str:
    return f"http://127.0.0.1:{run.mesh.pod(pod).ports.ingress}/merchant-write"


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def converged(run: MeshRun) -> None:
    """Each test starts with every sidecar connected to the current server."""
    await wait_until(lambda: reconverged(run), 30, "every sidecar to converge")


async def test_live_injection_resumes_with_its_remaining_time(run: MeshRun) -> None:
    created = await call(
        run, "CreateInjection", injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=30)
    )
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        active = await wait_state(
            faultplane_pb2_grpc.FaultServiceStub(channel), created.id, {pb.ACTIVE}
        )

    await crash_and_restart(run)
    resumed = await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))

    assert resumed.state == pb.ACTIVE
    assert resumed.ends_at == active.ends_at
    # The outage is in the history: ACTIVE -> ACTIVE says when the fault was off.
    assert [t.to_state for t in resumed.transitions] == [pb.PENDING, pb.ACTIVE, pb.ACTIVE]

    await wait_until(lambda: reconverged(run), 30, "every sidecar to converge on the new server")
    for pod in ("payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"):
        (reply,) = await send(ingress(run, pod), method="POST")
        assert reply.status == 503 and reply.headers.get(INJECTION_HEADER) == created.id, pod

    aborted = await call(run, "AbortInjection", pb.AbortInjectionRequest(id=created.id))
    assert [t.to_state for t in aborted.transitions] == [
        pb.PENDING, pb.ACTIVE, pb.ACTIVE, pb.ABORTED,
    ]  # fmt: skip
    assert {e.outcome for e in aborted.transitions[-1].evidence} == {"acked"}
    assert (await send(ingress(run, "payments-api-3"), method="POST"))[0].status == 200
    verdict = await call(run, "VerifyAudit", pb.VerifyAuditRequest())
    assert verdict.ok, verdict.problem


async def test_multi_fault_injection_resumes_every_part_after_a_crash(run: MeshRun) -> None:
    # The south shard's inbound refused AND the north pod's ledger calls refused.
    south = {"service": "payments-api", "selector": "shard=south-1", "max_pods": 3}
    north = {"service": "payments-api", "selector": "shard=north-1", "max_pods": 1,
             "upstream": "ledger"}  # fmt: skip
    abort = {"type": "abort", "http_status": 503}
    request = injection_request(duration_seconds=30)
    request.ClearField("target")
    request.ClearField("fault")
    for target in (south, north):
        part = request.faults.add()
        json_format.ParseDict({"target": target, "fault": abort}, part)
    created = await call(run, "CreateInjection", request)
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        await wait_state(faultplane_pb2_grpc.FaultServiceStub(channel), created.id, {pb.ACTIVE})

    await crash_and_restart(run)
    resumed = await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))
    assert resumed.state == pb.ACTIVE

    await wait_until(lambda: reconverged(run), 30, "every sidecar to converge on the new server")
    ledger_from_north = f"http://127.0.0.1:{run.mesh.pod('payments-api-4').ports.egress}/score"
    for pod in ("payments-api-1", "payments-api-2", "payments-api-3"):
        (reply,) = await send(ingress(run, pod), method="POST")
        assert reply.status == 503 and reply.headers.get(INJECTION_HEADER) == created.id, pod
    (reply,) = await send(ledger_from_north, host="ledger")
    assert reply.status == 503 and reply.headers.get(INJECTION_HEADER) == f"{created.id}.1"

    await call(run, "AbortInjection", pb.AbortInjectionRequest(id=created.id))
    assert (await send(ingress(run, "payments-api-1"), method="POST"))[0].status == 200
    assert (await send(ledger_from_north, host="ledger"))[0].status == 200


async def test_injection_whose_deadline_passed_while_down_is_finalised(run: MeshRun) -> None:
    created = await call(
        run, "CreateInjection", injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=2)
    )
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        active = await wait_state(
            faultplane_pb2_grpc.FaultServiceStub(channel), created.id, {pb.ACTIVE}
        )
    run.server.kill()
    ends_at = active.ends_at.ToNanoseconds() / 1e9

    async def deadline_passed() -> bool:
        return time.time() > ends_at + 0.5

    await wait_until(deadline_passed, 10, "the deadline to pass")
    await crash_and_restart(run)
    done = await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))

    assert done.state == pb.COMPLETED
    assert done.reason == "deadline passed during control-server outage"
    assert [t.to_state for t in done.transitions] == [pb.PENDING, pb.ACTIVE, pb.COMPLETED]
    assert (await send(ingress(run, "payments-api-1"), method="POST"))[0].status == 200


async def test_pending_injection_at_crash_is_rolled_back(run: MeshRun) -> None:
    frozen = next(p for p in run.pods if p.pod.name == "payments-api-2")
    os.kill(frozen.envoy.pid, signal.SIGSTOP)  # it will never ACK: the injection stays PENDING
    try:
        created = await call(
            run, "CreateInjection", injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=60)
        )
        assert (
            await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))
        ).state == pb.PENDING
        run.server.kill()
    finally:
        os.kill(frozen.envoy.pid, signal.SIGCONT)
    await crash_and_restart(run)

    done = await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))
    assert done.state == pb.FAILED
    assert "rolled back" in done.reason

    async def clean_everywhere() -> bool:
        for pod in ("payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"):
            routes = await faulted_routes(f"127.0.0.1:{run.mesh.pod(pod).ports.admin}")
            if (
                routes.get("ingress")
                or (await send(ingress(run, pod), method="POST"))[0].status != 200
            ):
                return False
        return True

    await wait_until(clean_everywhere, 30, "every sidecar to be clean after the rollback")
