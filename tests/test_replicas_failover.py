"""Three `faultplane serve` replicas on one PostgreSQL, with real Envoys held by one of
them: a SIGKILLed owner's injection is taken over by a survivor and still ends at its
deadline with exactly one final transition; an abort on any replica withdraws it; a
freeze on one replica refuses creates on the others."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
import yaml

from faultplane.demo.launcher import MeshRun, grpc_serving
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, ProcessGroup, wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.store.postgres import PostgresStore
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, SLO_FILE
from tests.helpers import injection_request, rpc_error, send, wait_state
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)
from tests.test_restart import ABORT_ALL_PAYMENTS

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEASE_SECONDS = 5.0  # faultplane.replicas.ownership.LEASE_SECONDS
START_TIMEOUT = 60.0
PROBE_SECONDS = 0.2


@dataclass
class Cluster:
    run: MeshRun
    processes: ProcessGroup
    servers: dict[str, Child]
    apis: dict[str, str]  # replica -> its API address
    url: str

    def stub(self, replica: str) -> faultplane_pb2_grpc.FaultServiceStub:
        channel = grpc.aio.insecure_channel(self.apis[replica])
        return faultplane_pb2_grpc.FaultServiceStub(channel)

    def ingress(self, pod: str) -> str:
        assert self.run.mesh is not None
        return f"http://127.0.0.1:{self.run.mesh.pod(pod).ports.ingress}/merchant-write"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> AsyncIterator[Cluster]:
    url = postgres_cluster.create_database()
    allocate = PortAllocator()
    mesh = load_mesh(MESH_FILE).with_ports(allocate)
    run_dir = tmp_path_factory.mktemp("failover")
    mesh_file = run_dir / "replicas-mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(mesh.to_dict(), sort_keys=False))
    control = mesh.control
    # b serves the mesh's own ports, so every Envoy connects to it; a and c serve others.
    ports = {
        "b": (control.xds_port, control.api_port, control.metrics_port),
        "a": (allocate(), allocate(), allocate()),
        "c": (allocate(), allocate(), allocate()),
    }
    processes = ProcessGroup()
    servers: dict[str, Child] = {}
    try:
        for name, (xds, api, metrics) in ports.items():
            argv = [
                sys.executable, "-m", "faultplane", "serve", "--mesh", str(mesh_file),
                "--store", url, "--replica-name", name, "--auth", "local",
                "--audit-key-file", str(run_dir / "key" / "audit.key"),
                "--slos", str(SLO_FILE), "--baseline-min-seconds", "0",
                "--deadman-ttl", "3", "--ack-timeout", "20",
                "--xds-port", str(xds), "--api-port", str(api), "--metrics-port", str(metrics),
            ]  # fmt: skip
            log = run_dir / f"replica-{name}.log"
            servers[name] = processes.spawn(Child(f"replica-{name}", argv, log))
        apis = {name: f"127.0.0.1:{api}" for name, (_, api, _) in ports.items()}
        for name, api in apis.items():
            await wait_until(
                lambda api=api: grpc_serving(api),
                START_TIMEOUT,
                f"replica {name}",
                [*servers.values()],
            )
        async with MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False) as run:
            found = Cluster(run, processes, servers, apis, url)
            await wait_until(
                lambda: all_connected(found, "a"), START_TIMEOUT, "a sees b's sidecars"
            )
            yield found
    finally:
        processes.stop_all()


async def all_connected(cluster: Cluster, replica: str) -> bool:
    assert cluster.run.mesh is not None
    reply = await cluster.stub(replica).ListSidecars(pb.ListSidecarsRequest(), timeout=10)
    return sum(s.connected for s in reply.sidecars) == len(cluster.run.mesh.pods)


async def status(url: str) -> int:
    """503 only when faultplane's fault answered (its header names the injection)."""
    (reply,) = await send(url, method="POST")
    return reply.status if reply.status == 200 or reply.headers.get(INJECTION_HEADER) else -1


async def test_abort_on_a_replica_that_does_not_own_it_withdraws_everywhere(
    cluster: Cluster,
) -> None:
    c = cluster.stub("c")
    created = await c.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=120))
    active = await wait_state(c, created.id, {pb.ACTIVE})
    for target in active.targets:
        assert await status(cluster.ingress(target)) == 503
    aborted = await cluster.stub("b").AbortInjection(
        pb.AbortInjectionRequest(id=created.id, reason="stop it from b"), timeout=60
    )
    assert aborted.state == pb.ABORTED
    assert [t.to_state for t in aborted.transitions].count(pb.ABORTED) == 1
    for target in active.targets:
        assert await status(cluster.ingress(target)) == 200
    # Owned by c, which made the abort: the transitions are c's alone, none repeated.
    again = await c.GetInjection(pb.GetInjectionRequest(id=created.id))
    assert [t.to_state for t in again.transitions] == [pb.PENDING, pb.ACTIVE, pb.ABORTED]


async def test_abort_all_on_one_replica_stops_every_replicas_injections(
    cluster: Cluster,
) -> None:
    created = {}
    for replica, group in (("a", GROUPS[0]), ("c", GROUPS[3])):
        stub = cluster.stub(replica)
        request = injection_request(target=group, duration_seconds=120)
        created[replica] = (await stub.CreateInjection(request, timeout=30)).id
        await wait_state(stub, created[replica], {pb.ACTIVE})
    reply = await cluster.stub("b").AbortAllInjections(
        pb.AbortAllInjectionsRequest(reason="stop everything"), timeout=90
    )
    assert {i.id for i in reply.aborted} >= set(created.values())
    for replica, injection_id in created.items():
        ended = await cluster.stub(replica).GetInjection(pb.GetInjectionRequest(id=injection_id))
        assert ended.state == pb.ABORTED, ended.reason
        assert [t.to_state for t in ended.transitions].count(pb.ABORTED) == 1


async def test_a_watch_on_one_replica_sees_another_replicas_transitions(
    cluster: Cluster,
) -> None:
    events = cluster.stub("b").WatchInjections(pb.WatchInjectionsRequest())
    await events.initial_metadata()  # subscribed
    a = cluster.stub("a")
    created = await a.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=1))
    seen: list[int] = []

    async def follow() -> None:
        async for event in events:
            if event.injection.id == created.id:
                seen.append(event.transition.to_state)
                if event.transition.to_state == pb.COMPLETED:
                    return

    try:
        await asyncio.wait_for(follow(), 60)
    finally:
        events.cancel()
    assert seen == [pb.PENDING, pb.ACTIVE, pb.COMPLETED]  # each once, in order


async def test_a_freeze_on_one_replica_refuses_creates_on_another(cluster: Cluster) -> None:
    await cluster.stub("b").Freeze(pb.FreezeRequest(reason="game day over"), timeout=10)
    try:

        async def refused() -> bool:
            error = await rpc_error(
                cluster.stub("a").CreateInjection(injection_request(**ABORT_ALL_PAYMENTS))
            )
            return error.code() == grpc.StatusCode.FAILED_PRECONDITION

        await wait_until(refused, 10, "a to see b's freeze")
    finally:
        await cluster.stub("c").Unfreeze(pb.UnfreezeRequest(), timeout=10)
    a = cluster.stub("a")

    async def admitted() -> bool:
        try:
            created = await a.CreateInjection(
                injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=1)
            )
        except grpc.aio.AioRpcError:
            return False
        await wait_state(a, created.id, {pb.COMPLETED}, timeout=30)
        return True

    await wait_until(admitted, 10, "a to see c's unfreeze")


async def test_the_guard_reads_once_per_tick_not_once_per_replica(cluster: Cluster) -> None:
    c = cluster.stub("c")
    created = await c.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=120))
    await wait_state(c, created.id, {pb.ACTIVE})
    with PostgresStore(cluster.url, anchor_writes=False) as store:

        async def some_readings() -> bool:
            return len(store.readings.load(created.id)) >= 4

        try:
            await wait_until(some_readings, 30, "four guard readings")
            at = sorted(reading.at for reading in store.readings.load(created.id))
        finally:
            await c.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=60)
    # One guard (the owner's) at one reading per 1 s tick: three replicas guarding it
    # would store readings in bursts, milliseconds apart; a late tick moves one by less.
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert min(gaps) > 0.2, gaps


# Four groups of requests that conflict only within a group: the north or the south
# shard of payments-api, on its inbound traffic or on its calls to fraud-scoring.
GROUPS = [
    {"selector": f"shard={shard}", "max_pods": 3, "upstream": upstream}
    for shard in ("north-1", "south-1")
    for upstream in (None, "fraud-scoring")
]


async def test_concurrent_creates_across_replicas_admit_exactly_the_non_conflicting(
    cluster: Cluster,
) -> None:
    replicas = sorted(cluster.apis)
    stubs = {name: cluster.stub(name) for name in replicas}

    async def create(index: int) -> pb.Injection:
        request = injection_request(
            target=GROUPS[index % len(GROUPS)],
            fault={"type": "abort", "http_status": 503},
            duration_seconds=120,
        )
        return await stubs[replicas[index % len(replicas)]].CreateInjection(request, timeout=60)

    results = await asyncio.gather(*(create(i) for i in range(50)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, pb.Injection)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    try:
        assert len(winners) == len(GROUPS), [
            str(r) for r in results if not isinstance(r, pb.Injection | grpc.aio.AioRpcError)
        ]
        assert len(refused) == 50 - len(GROUPS)
        assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert all("already has live injection" in e.details() for e in refused)
        # One winner per group: their (targets, scope) never overlap.
        scopes = {(tuple(sorted(w.targets)), w.request.target.upstream) for w in winners}
        assert len(scopes) == len(GROUPS)
    finally:
        for winner in winners:
            await stubs["b"].AbortInjection(pb.AbortInjectionRequest(id=winner.id), timeout=60)


async def test_a_sigkilled_owner_is_taken_over_and_ends_at_its_deadline(cluster: Cluster) -> None:
    a = cluster.stub("a")
    created = await a.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=20))
    active = await wait_state(a, created.id, {pb.ACTIVE})
    ends_at = active.ends_at.ToDatetime().timestamp()
    target = cluster.ingress(active.targets[0])
    assert await status(target) == 503

    killed_server = cluster.servers["a"]
    killed_server.kill()  # SIGKILL: no withdrawal, no goodbye
    killed = time.time()
    b = cluster.stub("b")
    # Probe the fault in the traffic until the deadline: how long was it off?
    off: list[float] = []
    taken_over_at = None
    while time.time() < ends_at - 0.5:
        if await status(target) != 503:
            off.append(time.time())
        if taken_over_at is None:
            now = await b.GetInjection(pb.GetInjectionRequest(id=created.id), timeout=10)
            if any("taken over by replica" in t.reason for t in now.transitions):
                taken_over_at = time.time()
        await asyncio.sleep(PROBE_SECONDS)  # the probe's pace, not a synchronisation
    assert taken_over_at is not None, "no replica took the injection over before its deadline"
    assert taken_over_at - killed < 3 * LEASE_SECONDS + 5  # lease expiry + a scan, loaded
    gap = (max(off) - min(off)) if off else 0.0
    print(f"takeover {taken_over_at - killed:.1f}s after SIGKILL; fault off for ~{gap:.1f}s")
    assert await status(target) == 503, "the new owner put the fault back"

    done = await wait_state(b, created.id, {pb.COMPLETED}, timeout=LEASE_SECONDS + 30)
    ended_at = done.ended_at.ToDatetime().timestamp()
    assert ended_at - ends_at < LEASE_SECONDS + 1 + 3  # + slack for a loaded machine
    states = [t.to_state for t in done.transitions]
    assert states == [pb.PENDING, pb.ACTIVE, pb.ACTIVE, pb.COMPLETED]
    assert await status(target) == 200
    verdict = await b.VerifyAudit(pb.VerifyAuditRequest(), timeout=30)
    assert verdict.ok, verdict.problem
    # a comes back (other tests use it): it takes back nothing that is now c's.
    fresh = Child("replica-a", killed_server.argv, killed_server.log_path)
    cluster.servers["a"] = cluster.processes.replace(killed_server, fresh, kill=True)
    await wait_until(lambda: grpc_serving(cluster.apis["a"]), START_TIMEOUT, "a again", [fresh])


async def test_a_blackout_added_on_one_replica_holds_creates_on_another_and_the_queue_is_refused(
    cluster: Cluster,
) -> None:
    """Blackouts and the policy are read again under the admission lock, so a blackout
    added on b refuses an immediate create on a at once. The queue and recurring
    schedules run on a single server: with replicas they are refused, naming the field,
    rather than started by every replica or never."""
    a, b = cluster.stub("a"), cluster.stub("b")
    start = time.time() - 60
    request = pb.AddBlackoutRequest(name="settlement")
    request.start.FromNanoseconds(int(start * 1e9))
    request.end.FromNanoseconds(int((start + 3600) * 1e9))
    added = await b.AddBlackout(request, timeout=10)
    try:
        error = await rpc_error(a.CreateInjection(injection_request(**ABORT_ALL_PAYMENTS)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "settlement" in error.details()
    finally:
        await b.RemoveBlackout(pb.RemoveBlackoutRequest(id=added.id), timeout=10)

    queued = injection_request(**ABORT_ALL_PAYMENTS)
    queued.on_conflict = pb.ON_CONFLICT_QUEUE
    error = await rpc_error(a.CreateInjection(queued))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details().startswith("on_conflict, not_before: the queue runs on a single")

    schedule = pb.CreateScheduleRequest(
        experiment=injection_request(**ABORT_ALL_PAYMENTS), every="1d"
    )
    error = await rpc_error(a.CreateSchedule(schedule))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details().startswith("schedule: recurring experiments need the queue")
    listed = await a.ListInjections(pb.ListInjectionsRequest(), timeout=10)
    assert not [i for i in listed.injections if i.state == pb.QUEUED]  # nothing half-made
