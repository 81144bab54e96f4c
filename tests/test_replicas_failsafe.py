"""Fail safe with replicas: when PostgreSQL goes away, the replicas stop renewing the
faults they serve (the Envoys' traffic is clean again within the dead-man TTL) and report
NOT_SERVING; when it returns they serve again and the injection carries on to its
deadline with exactly one final transition, and the audit chain verifies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.replicas.sync import LOST_AFTER_SECONDS
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, send, until, wait_state
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)
from tests.replicas import OnReplicas, started_replicas
from tests.test_restart import ABORT_ALL_PAYMENTS

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEADMAN_TTL = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Pair(OnReplicas):
    a: ControlServer  # creates the injection
    b: ControlServer  # holds every Envoy
    run: MeshRun
    database: PostgresCluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> AsyncIterator[Pair]:
    url = postgres_cluster.create_database()
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    run_dir = tmp_path_factory.mktemp("replica-failsafe")
    settings = {"deadman_ttl": DEADMAN_TTL, "ack_timeout": 20.0}
    async with (
        started_replicas(mesh, url, run_dir, ["b", "a"], **settings) as servers,
        MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False) as run,
    ):
        b = servers["b"]
        pods = {pod.name for pod in mesh.pods}
        await until(lambda: set(b.registry.local_nodes()) == pods, 60, "Envoys on b")  # type: ignore[attr-defined]
        yield Pair(servers["a"], b, run, postgres_cluster)


async def health(server: ControlServer) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return int(reply.status)


async def faulted(pair: Pair, targets: list[str], injection_id: str) -> list[bool]:
    found = []
    for target in targets:
        (reply,) = await send(pair.ingress(target), method="POST")
        found.append(reply.status == 503 and reply.headers.get(INJECTION_HEADER) == injection_id)
    return found


async def test_without_the_store_faults_lapse_and_replicas_say_not_serving(pair: Pair) -> None:
    a = pair.stub(pair.a)
    created = await a.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=30))
    active = await wait_state(a, created.id, {pb.ACTIVE})
    targets = list(active.targets)
    ends_at = active.ends_at.ToDatetime().timestamp()
    assert all(await faulted(pair, targets, created.id))

    pair.database.stop()
    stopped = time.monotonic()
    try:
        bound = LOST_AFTER_SECONDS + DEADMAN_TTL + 10  # + slack for a loaded machine

        async def clean() -> bool:
            return not any(await faulted(pair, targets, created.id))

        await wait_until(clean, bound, "the faults to lapse without the store")
        lapsed = time.monotonic() - stopped
        for server in (pair.a, pair.b):
            await wait_until(lambda s=server: _is(s, NOT_SERVING), bound, "NOT_SERVING")
        print(f"store stopped -> faults off in {lapsed:.1f}s")
    finally:
        pair.database.start()

    for server in (pair.a, pair.b):
        await wait_until(lambda s=server: _is(s, SERVING), 60, "SERVING again")

    # The cluster converges: the fault is back on (renewed, or resumed by a new owner)
    # before its deadline, and the injection ends once, at its deadline.
    async def back() -> bool:
        return all(await faulted(pair, targets, created.id))

    await wait_until(
        back, max(5.0, ends_at - time.time() - 1), "the fault back before its deadline"
    )
    done = await wait_state(a, created.id, {pb.COMPLETED}, timeout=60)
    states = [t.to_state for t in done.transitions]
    assert states.count(pb.COMPLETED) == 1 and states[-1] == pb.COMPLETED
    assert states[:2] == [pb.PENDING, pb.ACTIVE] and set(states[2:-1]) <= {pb.ACTIVE}
    assert done.ended_at.ToDatetime().timestamp() - ends_at < 5.0 + 1 + 3
    assert not any(await faulted(pair, targets, created.id))
    verdict = await a.VerifyAudit(pb.VerifyAuditRequest(), timeout=30)
    assert verdict.ok, verdict.problem


async def _is(server: ControlServer, status: int) -> bool:
    try:
        return await health(server) == status
    except grpc.aio.AioRpcError:
        return False
