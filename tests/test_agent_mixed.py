"""One experiment across both layers, on the real demo mesh and a real node agent:
"fraud-scoring +200 ms and 30 % packet loss to the database". The sidecar part is
delivered to Envoys (routes and runtime), the kernel part to the agent (nftables), under
one lifecycle: ACTIVE only once every target of both parts ACKed, one abort withdraws
both. The freeze refuses a kernel fault as it refuses any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.demo.launcher import MeshRun
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1.faultplane_pb2_grpc import FaultServiceStub as Stub
from tests.agent_stack import POD, PORT, AgentStack, kernel_request
from tests.conftest import MESH_FILE
from tests.helpers import fault_runtime_keys, send, wait_state
from tests.netns import (
    Link,
    connects,
    needs_root_and_nft,
    sink_server,
    unique_subnet,
    unique_tag,
    veth_link,
)

pytestmark = [needs_root_and_nft, pytest.mark.asyncio(loop_scope="module")]

DELAY_MS = 200
PAYMENTS = ["payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"]
SLOW_FRAUD = {
    "target": {"service": "payments-api", "selector": "", "max_pods": 4,
               "upstream": "fraud-scoring"},
    "fault": {"type": "latency", "fixed_ms": DELAY_MS},
}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[Link]:
    with veth_link(unique_tag(), unique_subnet()) as made:
        async with sink_server(made, PORT):
            assert await connects(made, PORT, 1, 5) == {"ok": 1}
            yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(
    link: Link, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[MeshRun, AgentStack]]:
    run_dir = tmp_path_factory.mktemp("mixed")
    async with MeshRun(
        MESH_FILE, run_dir, load=False, server_args=("--baseline-min-seconds", "0")
    ) as run:
        assert run.mesh is not None
        agent = AgentStack(link, run_dir, f"m{unique_tag()}", 10.0)
        agent.api_port, agent.xds_port = run.mesh.control.api_port, run.mesh.control.xds_port
        agent.server = run.server
        try:
            agent.start_agent()
            await agent.agent_listed()
            yield run, agent
        finally:
            assert agent.agent is not None
            agent.agent.stop(timeout=10)


@pytest_asyncio.fixture(loop_scope="module")
async def api(mesh: tuple[MeshRun, AgentStack]) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(mesh[0].api_address) as channel:
        yield Stub(channel)


def experiment(link: Link) -> pb.InjectionRequest:
    kernel = kernel_request(link, {"type": "packet_loss", "percentage": 30})
    document: dict[str, Any] = json_format.MessageToDict(kernel, preserving_proto_field_name=True)
    database = {"target": document.pop("target"), "fault": document.pop("fault")}
    document["faults"] = [SLOW_FRAUD, database]
    return json_format.ParseDict(document, pb.InjectionRequest())


async def test_sidecar_latency_and_kernel_loss_are_one_experiment(
    mesh: tuple[MeshRun, AgentStack], api: Stub
) -> None:
    run, agent = mesh
    created = await api.CreateInjection(experiment(agent.link))
    assert sorted(created.targets) == sorted([*PAYMENTS, agent.target])
    active = await wait_state(api, created.id, {pb.ACTIVE, pb.FAILED}, timeout=30)
    assert active.state == pb.ACTIVE, active.reason
    became_active = next(t for t in active.transitions if t.to_state == pb.ACTIVE)
    acked = {(e.sidecar, e.type) for e in became_active.evidence if e.outcome == "acked"}
    assert {(pod, kind) for pod in PAYMENTS for kind in ("rds", "rtds")} <= acked
    assert (agent.target, "kernel") in acked

    # Both layers hold their part: the agent's rule (the 30 % in basis points) and the
    # Envoys' delay on calls to fraud-scoring.
    rules = agent.rules()
    assert "numgen random mod 10000 < 3000 drop" in rules
    assert f"faultplane:{POD}/{created.id}.1" in rules
    pod = run.mesh.pod("payments-api-1")  # type: ignore[union-attr]
    (reply,) = await send(f"http://127.0.0.1:{pod.ports.egress}/score", host="fraud-scoring")
    assert reply.status == 200 and reply.ms >= DELAY_MS * 0.9

    await api.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="test over"))
    assert f"faultplane:{POD}/" not in agent.rules()
    assert await fault_runtime_keys(f"127.0.0.1:{pod.ports.admin}") == []


async def test_freeze_refuses_a_kernel_fault(mesh: tuple[MeshRun, AgentStack], api: Stub) -> None:
    _, agent = mesh
    await api.Freeze(pb.FreezeRequest(reason="release in progress"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.CreateInjection(kernel_request(agent.link, {"type": "partition"}))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "release in progress" in refused.value.details()
    finally:
        await api.Unfreeze(pb.UnfreezeRequest())
    assert f"faultplane:{POD}/" not in agent.rules()
