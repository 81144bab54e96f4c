"""What the in-process replica tests share: replicas of one mesh on one PostgreSQL,
started together (the first on the mesh's own control ports, which the Envoys'
bootstraps name; the others on free ones) and stopped together, and the calls the tests
make on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from faultplane.demo.launcher import MeshRun
from faultplane.model.mesh import Mesh
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import server_config


class OnReplicas:
    """A fixture's replicas and the mesh whose Envoys they serve."""

    run: MeshRun

    def stub(self, server: ControlServer) -> faultplane_pb2_grpc.FaultServiceStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}")
        return faultplane_pb2_grpc.FaultServiceStub(channel)

    def ingress(self, pod: str) -> str:
        assert self.run.mesh is not None
        return f"http://127.0.0.1:{self.run.mesh.pod(pod).ports.ingress}/merchant-write"


@asynccontextmanager
async def started_replicas(
    mesh: Mesh, url: str, run_dir: Path, names: Sequence[str], **settings: Any
) -> AsyncIterator[dict[str, ControlServer]]:
    """Replicas `names` of `mesh` on the store at `url`, sharing one audit key."""
    common = {"store_url": url, "audit_key_file": run_dir / "key" / "audit.key", **settings}
    started: dict[str, ControlServer] = {}
    try:
        for index, name in enumerate(names):
            config = server_config(mesh, replica_name=name, **common)
            if index:
                config = replace(config, xds_port=0, api_port=0)
            server = ControlServer(config)
            await server.start()
            started[name] = server
        yield started
    finally:
        for server in reversed(list(started.values())):
            await server.stop(grace=0)
