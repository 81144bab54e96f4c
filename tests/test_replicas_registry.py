"""Replicas share one sidecar registry in PostgreSQL: which replica holds each sidecar's
stream, with heartbeats; a replica's view, its listings and its target selection include
the sidecars the others hold, and drop a replica's when it leaves or goes stale."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer
from faultplane.store.postgres import PostgresStore
from faultplane.store.replica_rows import SidecarRow
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, server_config
from tests.helpers import injection_request, run_cli, until
from tests.postgres import PostgresCluster, postgres_cluster, postgres_url  # noqa: F401
from tests.replicas import started_replicas

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


def row(node: str) -> SidecarRow:
    return SidecarRow(node, "payments-api", {"service": "payments-api"}, 1.0)


def test_heartbeats_publish_claim_and_expire(postgres_url: str) -> None:  # noqa: F811
    with PostgresStore(postgres_url, anchor_writes=False) as store:
        replicas = store.replicas
        now = time.time()
        replicas.beat("a", [row("n1")], now)
        replicas.beat("b", [row("n2"), row("n3")], now)
        seen = replicas.remote_sidecars("a", now - 5)
        assert [(s.replica, s.node_id) for s in seen] == [("b", "n2"), ("b", "n3")]
        assert [s.node_id for s in replicas.remote_sidecars("b", now - 5)] == ["n1"]

        # n3 reconnects to a: a claims it; b's next beat (without n3) leaves a's row be.
        replicas.beat("a", [row("n1"), row("n3")], now + 1)
        replicas.beat("b", [row("n2")], now + 1)
        assert [(s.replica, s.node_id) for s in replicas.remote_sidecars("b", now)] == [
            ("a", "n1"),
            ("a", "n3"),
        ]
        # b's sidecar n2 goes: gone from a's view at b's next beat.
        replicas.beat("b", [], now + 2)
        assert replicas.remote_sidecars("a", now) == []

        # A replica that stops beating drops out once its last beat is older than the bound.
        replicas.beat("c", [row("n4")], now + 2)
        assert [s.node_id for s in replicas.remote_sidecars("a", now + 1)] == ["n4"]
        assert replicas.remote_sidecars("a", now + 3) == []
        # One that leaves drops out at once, and its row says when it stopped.
        replicas.leave("a", now + 3)
        assert [s.node_id for s in replicas.remote_sidecars("b", now)] == ["n4"]
        stopped = {r.name: r.stopped_at for r in replicas.replicas()}
        assert stopped == {"a": now + 3, "b": None, "c": None}


def test_replica_name_needs_a_shared_store_and_a_plain_name() -> None:
    mesh = load_mesh(MESH_FILE)
    with pytest.raises(ValueError, match=r"replica_name \(--replica-name\): needs a PostgreSQL"):
        server_config(mesh, replica_name="a")
    for bad in ("", "a b", "x" * 64, "é"):
        with pytest.raises(ValueError, match=r"replica_name .* must be 1 to 63"):
            server_config(mesh, replica_name=bad, store_url="postgresql://u@127.0.0.1/x")


@MODULE_LOOP
async def test_serve_refuses_a_replica_name_without_store() -> None:
    code, _, err = await run_cli("serve", "--replica-name", "a")
    assert code == 2
    assert "--replica-name): needs a PostgreSQL store (--store)" in err


@dataclass
class Pair:
    """Replica a (no sidecars of its own) and replica b, which every Envoy connects to."""

    a: ControlServer
    b: ControlServer
    run: MeshRun


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> AsyncIterator[Pair]:
    url = postgres_cluster.create_database()
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    run_dir = tmp_path_factory.mktemp("replicas")
    async with (
        started_replicas(mesh, url, run_dir, ["b", "a"]) as servers,
        MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False) as run,
    ):
        yield Pair(servers["a"], servers["b"], run)


async def listed(server: ControlServer) -> dict[str, pb.Sidecar]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        reply = await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=10)
    return {sidecar.node_id: sidecar for sidecar in reply.sidecars}


@MODULE_LOOP
async def test_a_replica_lists_and_selects_the_sidecars_another_holds(pair: Pair) -> None:
    assert pair.run.mesh is not None
    pods = {pod.name for pod in pair.run.mesh.pods}
    held = pair.b.registry
    await until(lambda: {s.node_id for s in held.sidecars() if s.connected} == pods, 60,
                "every Envoy to connect to replica b")  # fmt: skip
    # a holds no stream, yet sees them all (through b's heartbeat), each held by b.
    view = pair.a.registry
    await until(lambda: {s.node_id for s in view.sidecars() if s.connected} == pods, 30,
                "replica a to see b's sidecars")  # fmt: skip
    on_a = await listed(pair.a)
    assert set(on_a) == pods
    assert {(s.replica, s.connected) for s in on_a.values()} == {("b", True)}
    on_b = await listed(pair.b)
    assert {s.replica for s in on_b.values()} == {"b"}
    assert all(s.xds for s in on_b.values())  # the holder shows its xDS evidence

    # Target selection on a picks among b's sidecars.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pair.a.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        plan = await stub.PlanInjection(injection_request(), timeout=20)
    assert plan.targets and set(plan.targets) <= pods
    assert all(target.startswith("payments-api") for target in plan.targets)

    # b stops cleanly: its sidecars leave a's view at once, not after the stale bound.
    await pair.b.stop(grace=0)
    await until(lambda: not any(s.connected for s in view.sidecars()), 10,
                "b's sidecars to leave a's view")  # fmt: skip
    assert set(await listed(pair.a)) <= pods


def test_sqlite_servers_have_no_replica_machinery(tmp_path: Path) -> None:
    """Single-process SQLite mode is exactly as before: a plain registry, no heartbeat."""
    from faultplane.server.parts import build
    from faultplane.xds.registry import SidecarRegistry

    parts = build(server_config(load_mesh(MESH_FILE), db_path=tmp_path / "f.db"))
    try:
        assert type(parts.registry) is SidecarRegistry
        assert parts.replication is None
    finally:
        parts.close()
