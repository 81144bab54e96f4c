"""Faults across replicas (issue 16's first e2e test): with 3 replicas and the mesh's
Envoys spread over them, an injection created on replica a whose targets are held by b
and by c becomes ACTIVE on evidence from both (each recorded in the store by the replica
holding the sidecar), faults the traffic through pods of both, and its abort withdraws
it everywhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.replicas.plane import ReplicatedPlane
from faultplane.server.control import ControlServer
from faultplane.store.postgres import PostgresStore
from faultplane.v1 import faultplane_pb2 as pb
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, send, until, wait_state
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)
from tests.replicas import OnReplicas, started_replicas
from tests.test_restart import ABORT_ALL_PAYMENTS

pytestmark = pytest.mark.asyncio(loop_scope="module")


# Which replica holds each pod's sidecar: its bootstrap lists that replica only, so the
# holder is deterministic. payments-api (the targets below) is split between b and c.
HOLDERS = {
    "ledger-1": "a",
    "payments-api-1": "b", "payments-api-2": "b", "fraud-scoring-1": "b",
    "payments-api-3": "c", "payments-api-4": "c", "fraud-scoring-2": "c",
}  # fmt: skip


@dataclass
class Trio(OnReplicas):
    """Three replicas on one PostgreSQL, each holding the Envoys HOLDERS gives it."""

    a: ControlServer
    b: ControlServer
    c: ControlServer
    run: MeshRun
    url: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def trio(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> AsyncIterator[Trio]:
    url = postgres_cluster.create_database()
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    run_dir = tmp_path_factory.mktemp("replica-faults")
    assert set(HOLDERS.values()) == {"a", "b", "c"}
    assert set(HOLDERS) == {p.name for p in mesh.pods}
    settings = {"deadman_ttl": 3.0, "ack_timeout": 20.0}
    async with (
        started_replicas(mesh, url, run_dir, ["b", "a", "c"], **settings) as servers,
        MeshRun(
            MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False,
            xds_ports=lambda pod: [servers[HOLDERS[pod.name]].xds_port],
        ) as run,
    ):  # fmt: skip
        for name, server in servers.items():
            held = {pod for pod, holder in HOLDERS.items() if holder == name}
            await until(
                lambda s=server, h=held: set(s.registry.local_nodes()) == h,  # type: ignore[attr-defined]
                60, f"Envoys on {name}",
            )  # fmt: skip
        yield Trio(servers["a"], servers["b"], servers["c"], run, url)


async def statuses(url: str) -> list[int]:
    return [reply.status for reply in await send(url, method="POST")]


async def test_created_on_a_active_on_evidence_from_b_and_c_and_withdrawn_everywhere(
    trio: Trio,
) -> None:
    a = trio.stub(trio.a)
    # Every replica's fleet view says who holds each sidecar (Sidecar.replica); a sees the
    # others' through the store, a heartbeat behind what each holder knows.
    seen: list[dict[str, str]] = [{}]

    async def a_sees_every_holder() -> bool:
        listed = (await a.ListSidecars(pb.ListSidecarsRequest(), timeout=10)).sidecars
        seen[0] = {s.node_id: s.replica for s in listed if s.connected}
        return seen[0] == HOLDERS

    try:
        await wait_until(a_sees_every_holder, 30, "a's view of every holder")
    except TimeoutError:
        assert seen[0] == HOLDERS  # says which sidecar a does not see where

    request = injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=120)
    started = time.monotonic()
    created = await a.CreateInjection(request, timeout=30)
    active = await wait_state(a, created.id, {pb.ACTIVE})
    latency = time.monotonic() - started
    assert active.state == pb.ACTIVE, active.reason
    targets = set(active.targets)
    holders = {HOLDERS[t] for t in targets}
    assert holders == {"b", "c"}, f"targets {sorted(targets)} should be held by b and c"
    evidence = active.transitions[-1].evidence
    assert {e.sidecar for e in evidence} == targets
    assert {e.outcome for e in evidence} == {"acked"}
    # Each answer came from the replica holding the sidecar: its cache instance names
    # the version the sidecar ACKed.
    instances = {"b": trio.b.cache.instance, "c": trio.c.cache.instance}
    for e in evidence:
        assert e.version.rsplit("-", 1)[0] == instances[HOLDERS[e.sidecar]], e
    print(f"cross-replica create (targets on b and c) -> ACTIVE: {latency:.2f}s")

    # b and c recorded them in the store, for owner a.
    with PostgresStore(trio.url, anchor_writes=False) as store:
        recorded = store.faults.evidence("a", sorted(targets))
    assert {(e.node_id, e.replica, e.acked) for e in recorded} == {
        (t, HOLDERS[t], True) for t in targets
    }

    # The fault is in the traffic through every target, b's and c's; all see ACTIVE.
    for target in targets:
        reply = (await send(trio.ingress(target), method="POST"))[0]
        assert reply.status == 503 and reply.headers.get(INJECTION_HEADER) == created.id
    for replica in (trio.b, trio.c):
        seen = await trio.stub(replica).GetInjection(pb.GetInjectionRequest(id=created.id))
        assert seen.state == pb.ACTIVE

    aborted = await a.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=30)
    assert aborted.state == pb.ABORTED
    off = aborted.transitions[-1].evidence
    assert {e.sidecar for e in off} >= targets and {e.outcome for e in off} == {"acked"}
    for target in targets:
        assert await statuses(trio.ingress(target)) == [200]


async def test_an_injection_on_a_holding_replica_completes_on_both(trio: Trio) -> None:
    """Created on b, which holds half its targets (c the rest): it still completes at its
    deadline and leaves every target's traffic clean."""
    b = trio.stub(trio.b)
    created = await b.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=2))
    active = await wait_state(b, created.id, {pb.ACTIVE})
    assert active.state == pb.ACTIVE
    done = await wait_state(b, created.id, {pb.COMPLETED}, timeout=30)
    assert done.state == pb.COMPLETED
    for target in done.targets:
        assert await statuses(trio.ingress(target)) == [200]


async def test_a_sidecar_reconnecting_to_another_replica_keeps_the_fault(trio: Trio) -> None:
    """The store, not the owner's memory, says what a sidecar carries: b's sidecars
    handed to c (b signs off, they reconnect to c) are served a's fault by c."""
    a = trio.stub(trio.a)
    created = await a.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=120))
    active = await wait_state(a, created.id, {pb.ACTIVE})
    target = active.targets[0]
    # c takes the sidecar the way a survivor would: it delivers a's desired faults.
    foreign = trio.c.parts.replication.foreign  # type: ignore[union-attr]
    assert foreign is not None
    plane = trio.c.parts.replication.plane  # type: ignore[union-attr]
    await foreign.refresh([target])
    assert [f.injection_id for f, _ in plane.foreign.get(target, [])] == [created.id]
    await a.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=30)
    await foreign.refresh([target])
    await wait_until(lambda: _no_foreign(plane, target), 10, "c to drop the aborted fault")


async def _no_foreign(plane: ReplicatedPlane, target: str) -> bool:
    return not plane.foreign.get(target)
