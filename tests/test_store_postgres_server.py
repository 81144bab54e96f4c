"""`faultplane serve --store postgresql://...`: a real server process on a real PostgreSQL
with real Envoy sidecars keeps its injections across a SIGKILL, and the flag's misuses
(with --db, a non-PostgreSQL URL, an unreachable database) fail before anything starts."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import yaml

from faultplane.demo.launcher import MeshRun, grpc_serving
from faultplane.demo.ports import PortAllocator, free_port
from faultplane.demo.processes import Child, ProcessGroup, wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.store.postgres import PostgresStore
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, SLO_FILE
from tests.helpers import injection_request, run_cli, send, wait_state
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)
from tests.test_restart import ABORT_ALL_PAYMENTS, call, ingress, reconverged

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Served:
    """A mesh whose control server is `faultplane serve --store URL`."""

    run: MeshRun
    processes: ProcessGroup
    server: Child
    url: str

    async def crash_and_restart(self) -> None:
        fresh = Child("control-server", self.server.argv, self.server.log_path)
        self.server = self.processes.replace(self.server, fresh, kill=True)
        await wait_until(
            lambda: grpc_serving(self.run.api_address), 60, "the restarted server", [self.server]
        )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> AsyncIterator[Served]:
    url = postgres_cluster.create_database()
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    run_dir = tmp_path_factory.mktemp("pg-mesh")
    mesh_file = run_dir / "served-mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(mesh.to_dict(), sort_keys=False))
    argv = [
        sys.executable, "-m", "faultplane", "serve", "--mesh", str(mesh_file),
        "--store", url, "--auth", "local", "--audit-key-file", str(run_dir / "key/audit.key"),
        "--slos", str(SLO_FILE), "--baseline-min-seconds", "0",
        "--deadman-ttl", "3", "--ack-timeout", "20",
        # A restart under the same name takes its own leases back at once (a new name
        # would wait for them to expire, faultplane.replicas.ownership).
        "--replica-name", "pg-1",
    ]  # fmt: skip
    processes = ProcessGroup()
    try:
        server = processes.spawn(Child("control-server", argv, run_dir / "server.log"))
        api = f"127.0.0.1:{mesh.control.api_port}"
        await wait_until(lambda: grpc_serving(api), 60, "the server on PostgreSQL", [server])
        async with MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False) as run:
            yield Served(run, processes, server, url)
    finally:
        processes.stop_all()


async def test_injection_survives_a_sigkilled_server_on_postgresql(served: Served) -> None:
    run = served.run
    await wait_until(lambda: reconverged(run), 60, "every sidecar to converge")
    created = await call(
        run, "CreateInjection", injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=60)
    )
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        active = await wait_state(
            faultplane_pb2_grpc.FaultServiceStub(channel), created.id, {pb.ACTIVE}
        )

    await served.crash_and_restart()
    resumed = await call(run, "GetInjection", pb.GetInjectionRequest(id=created.id))
    assert resumed.state == pb.ACTIVE
    assert resumed.ends_at == active.ends_at
    assert [t.to_state for t in resumed.transitions] == [pb.PENDING, pb.ACTIVE, pb.ACTIVE]

    await wait_until(lambda: reconverged(run), 60, "every sidecar to converge on the new server")
    (reply,) = await send(ingress(run, "payments-api-2"), method="POST")
    assert reply.status == 503 and reply.headers.get(INJECTION_HEADER) == created.id

    await call(run, "AbortInjection", pb.AbortInjectionRequest(id=created.id))
    assert (await send(ingress(run, "payments-api-2"), method="POST"))[0].status == 200
    verdict = await call(run, "VerifyAudit", pb.VerifyAuditRequest())
    assert verdict.ok, verdict.problem
    # The record is in PostgreSQL itself, with its audit on the one chain there.
    with PostgresStore(served.url, anchor_writes=False) as store:
        stored = store.injections.get(created.id)
        assert stored is not None and stored.state == "ABORTED"
        assert [e.entry.get("injection_id") for e in store.audit.entries(injection_id=created.id)]
        assert store.audit.verify().ok


async def test_store_and_db_together_are_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "serve", "--db", str(tmp_path / "f.db"), "--store", "postgresql://u@127.0.0.1/x"
    )
    assert code == 2
    assert "--db PATH (SQLite) or --store postgresql://... (PostgreSQL), not both" in err


async def test_store_must_be_a_postgresql_url(tmp_path: Path) -> None:
    code, _, err = await run_cli("serve", "--store", str(tmp_path / "f.db"))
    assert code == 2
    assert "argument --store: must be a postgresql:// URL" in err


async def test_unreachable_database_fails_start_naming_it_without_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://alice:s3cret@127.0.0.1:{free_port()}/faultplane"
    code, _, err = await run_cli(
        "serve", "--store", url, "--audit-key-file", str(tmp_path / "audit.key"),
        "--api-port", str(free_port()), "--xds-port", str(free_port()), "--metrics-port", "0",
    )  # fmt: skip
    assert code == 1
    assert "cannot connect to postgresql://alice@127.0.0.1:" in err
    assert "s3cret" not in err


async def test_tokens_are_created_listed_and_revoked_in_a_postgresql_store(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> None:
    # The first token of a `serve --store postgresql://… --auth token` server can only come
    # from the CLI writing to the same database, keyed like the server's audit chain.
    url = postgres_cluster.create_database()
    key = ["--audit-key-file", str(tmp_path / "audit.key")]
    code, _, err = await run_cli(
        "token", "create", "--store", url, *key, "--principal", "ananya", "--role", "operator"
    )
    assert code == 0, err
    code, listed, err = await run_cli("token", "list", "--store", url)
    assert code == 0, err
    assert "ananya" in listed and "operator" in listed

    store = PostgresStore(url)
    try:
        [token] = store.tokens.list()
        code, _, err = await run_cli("token", "revoke", "--store", url, *key, token.id)
        assert code == 0, err
        assert store.tokens.list()[0].revoked_at is not None
        assert store.audit.verify().ok
    finally:
        store.close()

    code, _, err = await run_cli("token", "list", "--store", url, "--db", str(tmp_path / "x.db"))
    assert code == 2
    assert "not both" in err
