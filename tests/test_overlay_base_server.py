"""Faults from `faultplane serve --overlay` on Envoys whose listeners, routes and clusters
come from a second ADS server (the demo's base server, standing in for istiod), and what
happens to a live fault when that other control plane dies and comes back.

A small mesh (one pod per service) keeps the module light: payments-api calls
fraud-scoring and ledger through its egress listener, whose clusters are named after the
dependency by the base server, so `target.upstream: fraud-scoring` matches one exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from faultplane.cli.connection import fault_stub
from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import Mesh, Pod, load_mesh
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, send, wait_state
from tests.overlay_envoy import FINISHED, inject, stat_values

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Envoy's gauge for its ADS stream to the base server (faultplane's per-type streams have
# their own, under `runtime.` and each slot's scope).
BASE_CONNECTED = "control_plane.connected_state"
OUTAGE_TIMEOUT = 30.0  # Envoy sees a killed server's socket close at once; the rest is load
ABORT_FRAUD = injection_request(
    {"selector": "", "max_pods": 1}, {"type": "abort", "http_status": 503}, duration_seconds=120
)  # on payments-api's calls to fraud-scoring (the README example's target)


def one_pod_per_service(mesh: Mesh) -> Mesh:
    return dataclasses.replace(
        mesh,
        services={
            name: dataclasses.replace(service, pods=service.pods[:1])
            for name, service in mesh.services.items()
        },
        load=None,
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    mesh = one_pod_per_service(load_mesh(MESH_FILE)).with_ports(PortAllocator())
    async with MeshRun(
        MESH_FILE,
        tmp_path_factory.mktemp("overlay-base"),
        mesh=mesh,
        load=False,
        overlay=True,
        server_args=("--baseline-min-seconds", "0"),
    ) as mesh_run:
        yield mesh_run


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        yield fault_stub(channel)


async def calls_from(pod: Pod) -> dict[str, set[int]]:
    """The statuses of 10 calls from the pod's egress listener to each dependency."""
    return {
        dep: {r.status for r in await send(f"http://127.0.0.1:{pod.ports.egress}/x", 10, host=dep)}
        for dep in ("fraud-scoring", "ledger")
    }


def payments_pod(run: MeshRun) -> Pod:
    assert run.mesh is not None
    pod = run.mesh.pod("payments-api-1")
    assert pod is not None
    return pod


async def base_connected(admin: str, state: int) -> bool:
    return (await stat_values(admin, BASE_CONNECTED)).get(BASE_CONNECTED) == state


async def test_inbound_latency_matched_by_path_on_envoys_configured_by_another_ads_server(
    run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    pod = payments_pod(run)
    admin = f"127.0.0.1:{pod.ports.admin}"
    match = {"path_prefix": "/merchant-write"}
    target = {"selector": "", "max_pods": 1, "upstream": None, "match": match}
    injection = await inject(stub, injection_request(target, {"type": "latency", "fixed_ms": 200}))
    delays = "http.ingress.fault.delays_injected"
    before = (await stat_values(admin, delays)).get(delays, 0)

    writes = await send(f"http://127.0.0.1:{pod.ports.ingress}/merchant-write", 5, method="POST")
    others = await send(f"http://127.0.0.1:{pod.ports.ingress}/refunds", 5, method="POST")
    injected = (await stat_values(admin, delays)).get(delays, 0) - before
    await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id, reason="done"))
    await wait_state(stub, injection.id, set(FINISHED), 30)

    assert {r.status for r in writes + others} == {200}
    assert min(r.ms for r in writes) >= 195  # Envoy's timer may fire a few ms early
    assert injected == 5  # the base server's ingress HCM delayed the matched writes only


async def test_base_server_killed_and_restarted_mid_injection_leaves_the_fault_in_place(
    run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    assert run.base_server is not None
    pod = payments_pod(run)
    admin = f"127.0.0.1:{pod.ports.admin}"
    injection = await inject(stub, ABORT_FRAUD)
    faulted = await calls_from(pod)
    writes = await send(f"http://127.0.0.1:{pod.ports.ingress}/merchant-write", 10, method="POST")

    run.base_server.kill()
    await wait_until(lambda: base_connected(admin, 0), OUTAGE_TIMEOUT, "the ADS stream to drop")
    during_outage = await calls_from(pod)
    run.restart_base_server()
    await run.wait_base_server_healthy()
    await wait_until(lambda: base_connected(admin, 1), OUTAGE_TIMEOUT, "ADS to reconnect")
    after_restart = await calls_from(pod)
    await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id, reason="done"))
    aborted = await wait_state(stub, injection.id, set(FINISHED), 30)
    withdrawn = await calls_from(pod)

    # Faultplane's fault on the base server's `fraud-scoring` cluster, nothing else; the
    # app sees its dependency fail (502: one of its calls failed).
    assert faulted == {"fraud-scoring": {503}, "ledger": {200}}
    assert {r.status for r in writes} == {502}
    # The other control plane's outage touches neither the fault nor the base config.
    assert during_outage == after_restart == faulted
    assert aborted.state == pb.ABORTED
    assert withdrawn == {"fraud-scoring": {200}, "ledger": {200}}
