"""One sidecar's stats page turns to garbage: the injections elsewhere stay guarded.

A real mesh (payments-api, fraud-scoring, ledger: real Envoys, apps and load) plus one
more service, `sink`, whose single sidecar is an ADS client without Envoy: its node
metadata points the guard at a tiny HTTP server that serves Envoy stats until the test
makes it serve garbage. Before the guard isolated sidecars, that page aborted every guard
tick, so every ACTIVE injection ran unguarded to its deadline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import Mesh, Pod, PodPorts, Service, load_mesh
from faultplane.server.control import ControlServer, ServerConfig
from faultplane.slo.catalogue import parse_catalogue
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.fake_sidecar import FakeSidecar
from tests.helpers import injection_request, wait_state
from tests.test_guard_failsafe import StatsServer, admin_servers

pytestmark = pytest.mark.asyncio(loop_scope="module")

TICK = 0.5
SINK = "sink"
CATALOGUE = {
    "slos": {
        "payments-ok": {"service": "payments-api", "window_seconds": 2},
        "sink-ok": {"service": SINK, "window_seconds": 2},
    }
}
ENDED = {pb.COMPLETED, pb.ABORTED, pb.FAILED}
# Bounds a failing run only: unguarded, both injections would run their 60 s.
END_TIMEOUT = 30.0


def _meshes() -> tuple[Mesh, Mesh]:
    """(the mesh the launcher runs, the control server's: the same plus `sink`). Fewer
    pods than the demo mesh: two cores run all of it."""
    allocate = PortAllocator()
    demo = load_mesh(MESH_FILE)
    keep = {"payments-api": 2, "fraud-scoring": 1, "ledger": 1}
    services = {n: dataclasses.replace(s, pods=s.pods[: keep[n]]) for n, s in demo.services.items()}
    assert demo.load is not None
    load = dataclasses.replace(demo.load, rate_per_second=40)
    run = dataclasses.replace(demo, services=services, load=load).with_ports(allocate)
    sink = Pod("sink-1", SINK, {}, PodPorts(allocate(), allocate(), allocate(), allocate()))
    control = dataclasses.replace(run, services={**run.services, SINK: Service(SINK, (), (sink,))})
    return run, control


@pytest.fixture(scope="module")
def meshes() -> tuple[Mesh, Mesh]:
    return _meshes()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(
    meshes: tuple[Mesh, Mesh], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MeshRun]:
    run_mesh, control_mesh = meshes
    # A server while the sidecars start, so they are configured before load begins.
    bootstrap = ControlServer(_config(control_mesh, slos=False))
    await bootstrap.start()
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), mesh=run_mesh, spawn_server=False
    ) as run:
        await bootstrap.stop(grace=0)
        yield run


def _config(mesh: Mesh, slos: bool = True) -> ServerConfig:
    return ServerConfig(
        mesh=mesh,
        xds_port=mesh.control.xds_port,
        api_port=mesh.control.api_port,
        metrics_port=None,
        deadman_ttl=5.0,
        slos=parse_catalogue(CATALOGUE, mesh.services) if slos else None,
        guard_tick=TICK,
        baseline_min_seconds=2.0,
        baseline_window=30.0,
    )


class SinkSidecar(FakeSidecar):
    """A sidecar without Envoy whose node metadata names `admin_port` for its stats."""

    def __init__(self, xds_address: str, pod: Pod, mesh: Mesh, admin_port: int) -> None:
        super().__init__(xds_address, pod, mesh)
        # The node goes out with the stream's first request, which is built only once the
        # event loop runs the request iterator: still in time here.
        self.node.metadata.update({"admin_port": admin_port})


async def test_a_garbage_stats_page_leaves_the_other_injections_guarded(
    mesh_run: MeshRun, meshes: tuple[Mesh, Mesh]
) -> None:
    _, mesh = meshes
    async with admin_servers({"sink-1": 1.0}) as stats:
        server = ControlServer(_config(mesh))
        await server.start()
        sink = SinkSidecar(f"127.0.0.1:{server.xds_port}", mesh.services[SINK].pods[0], mesh,
                           stats["sink-1"].port)  # fmt: skip
        try:
            await wait_until(lambda: _all_connected(server, len(mesh.pods)), 30, "sidecars")
            await wait_until(lambda: _baseline_ready(server), 30, "baseline history")
            async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
                stub = faultplane_pb2_grpc.FaultServiceStub(channel)
                sink_done, payments_done = await _run_both(stub, stats["sink-1"])
        finally:
            await sink.close()
            try:
                await server.scheduler.abort_all("test cleanup", "test")
            finally:
                await server.stop(grace=0)

    # The garbage page: an unreadable SLO, a breach, for the injection that needs it...
    assert sink_done.state == pb.ABORTED, sink_done.reason
    assert "sink-1: stats unparsable" in sink_done.reason
    garbled = [r for r in sink_done.readings if "stats unparsable" in r.error]
    assert garbled and all(r.breach and not r.HasField("value") for r in garbled)
    # ...while the payments injection is still read and aborted on its own breach.
    assert payments_done.state == pb.ABORTED and payments_done.verdict == "hypothesis refuted"
    assert payments_done.reason.startswith("steady-state breach: payments-ok 0.")
    values = [r.value for r in payments_done.readings if r.HasField("value")]
    assert values and min(values) < 0.95


async def _run_both(
    stub: faultplane_pb2_grpc.FaultServiceStub, sink_stats: StatsServer
) -> tuple[pb.Injection, pb.Injection]:
    """A guarded injection on the sink, its page turned to garbage, then a breaching one
    on payments-api; both to their ends."""
    on_sink = await stub.CreateInjection(
        injection_request(
            target={"service": SINK, "selector": "", "max_pods": 1, "upstream": None},
            fault={"type": "latency", "fixed_ms": 1},
            duration_seconds=60,
            steady_state={"slo": "sink-ok", "min": 0.5, "abort_after": 1},
        )
    )
    await wait_state(stub, on_sink.id, {pb.ACTIVE})
    sink_stats.garbage = True
    on_payments = await stub.CreateInjection(
        injection_request(
            target={"selector": "", "max_pods": 2, "upstream": None},
            fault={"type": "abort", "http_status": 503, "percentage": 50},
            duration_seconds=60,
            steady_state={"slo": "payments-ok", "min": 0.95, "abort_after": 1.5},
        )
    )
    payments_done = await wait_state(stub, on_payments.id, ENDED, END_TIMEOUT)
    sink_done = await wait_state(stub, on_sink.id, ENDED, END_TIMEOUT)
    return sink_done, payments_done


async def _all_connected(server: ControlServer, count: int) -> bool:
    sidecars = server.registry.sidecars()
    return sum(s.connected for s in sidecars) == count and all(
        s.status(t).acked_version for s in sidecars for t in s.types
    )


async def _baseline_ready(server: ControlServer) -> bool:
    assert server.preflight is not None
    for name in CATALOGUE["slos"]:
        stats = await server.preflight.stats(name)
        if stats.seconds_covered < 2.0 or stats.p5 is None:
            return False
    return True
