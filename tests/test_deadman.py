"""The dead-man switch: a SIGKILLed control server cannot leave a fault behind."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.render.faults import INJECTION_HEADER
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, send, wait_state

ABORT_INBOUND = {
    "target": {"selector": "", "max_pods": 4, "upstream": None},
    "fault": {"type": "abort", "http_status": 503},
}


async def start_fault(run: MeshRun, duration: float) -> tuple[pb.Injection, str]:
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        created = await stub.CreateInjection(
            injection_request(**ABORT_INBOUND, duration_seconds=duration)
        )
        active = await wait_state(stub, created.id, {pb.ACTIVE})
    pod = run.mesh.pod("payments-api-1")
    return active, f"http://127.0.0.1:{pod.ports.ingress}/merchant-write"


async def fault_gone(url: str) -> bool:
    """The abort no longer fires. (The route still names the injection in its response
    header: routes carry no lease, only the runtime keys that switch the fault on do.)"""
    (reply,) = await send(url, method="POST")
    return reply.status == 200


@pytest.mark.parametrize("ttl", [2.0])
async def test_sigkill_of_server_clears_fault_within_ttl(tmp_path: Path, ttl: float) -> None:
    async with MeshRun(
        MESH_FILE,
        tmp_path,
        server_args=("--deadman-ttl", str(ttl), "--baseline-min-seconds", "0"),
        load=False,
    ) as run:
        injection, url = await start_fault(run, duration=300)
        (before,) = await send(url, method="POST")
        assert before.status == 503 and before.headers[INJECTION_HEADER] == injection.id

        run.server.kill()
        killed_at = time.monotonic()
        await wait_until(lambda: fault_gone(url), ttl + 5, "the lease to run out")
        cleared_after = time.monotonic() - killed_at

        assert cleared_after <= ttl + 1.0
        assert all(p.envoy.alive() for p in run.pods)  # Envoy stays up


async def test_sigkill_cannot_stretch_a_fault_past_its_deadline(tmp_path: Path) -> None:
    """The lease never outlives the deadline, even with a long dead-man TTL."""
    async with MeshRun(
        MESH_FILE,
        tmp_path,
        server_args=("--deadman-ttl", "60", "--baseline-min-seconds", "0"),
        load=False,
    ) as run:
        injection, url = await start_fault(run, duration=2)
        run.server.kill()

        await wait_until(lambda: fault_gone(url), 10, "the fault to end at its deadline")

        ends_at = injection.ends_at.ToNanoseconds() / 1e9
        assert time.time() <= ends_at + 2.0
