"""The overlay demo's other control plane: a minimal ADS server standing in for istiod.

`python -m faultplane.demo.base_server --mesh RESOLVED_MESH --port P [--slots N]` serves
each pod of the mesh (its node id is the pod's name) the listeners, routes, clusters and
endpoints it needs (`overlay_base_resources`), whose HCMs declare faultplane's fault slots
the way a user's own config would. It serves no runtime layer, no fault, no API and keeps
no store: in overlay mode all of that is faultplane's (`faultplane serve --overlay`), on
its own connection, so this server can die or restart without touching a fault.

It is built from faultplane's own protocol layer (cache, registry, stream loop): the demo
needs a second control plane that behaves like a real one, not a second xDS
implementation. It answers gRPC health checks, so a launcher can wait until it serves.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from faultplane.cli.serve import until_signalled
from faultplane.model.mesh import Mesh, load_mesh
from faultplane.observability import logs
from faultplane.render.overlay_config import DEFAULT_SLOTS
from faultplane.render.resources import Resources, overlay_base_resources
from faultplane.server.config import HOST, listen_address
from faultplane.server.control import XDS_SERVER_OPTIONS
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.server import add_xds_services

log = structlog.get_logger("faultplane.demo.base_server")

# What a base control plane owns; the runtime layer and the fault slots are faultplane's.
BASE_TYPES = (types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE)
STOP_GRACE_SECONDS = 1.0


class BaseSource:
    """Fills the cache with a connecting pod's base resources (xds.server.ResourceSource);
    a node that is no pod of the mesh gets nothing, so it initialises and stays inert."""

    def __init__(self, mesh: Mesh, cache: SnapshotCache, slots: int) -> None:
        self._mesh = mesh
        self._cache = cache
        self._slots = slots

    def ensure(self, node: base_pb2.Node) -> None:
        if self._cache.has(node.id):
            return
        self._cache.set_resources(node.id, self.resources_of(node.id))

    def resources_of(self, node_id: str) -> Resources:
        pod = self._mesh.pod(node_id)
        if pod is None:
            log.warning("unknown sidecar: not a pod of the mesh, serving it nothing", node=node_id)
            return {type_url: {} for type_url in BASE_TYPES}
        return overlay_base_resources(self._mesh, pod, self._slots)


class BaseServer:
    """ADS (and health) for the mesh's pods on `host:port` (0: a free port)."""

    def __init__(
        self, mesh: Mesh, port: int = 0, slots: int = DEFAULT_SLOTS, host: str = HOST
    ) -> None:
        self.mesh = mesh
        self.host = host
        self.port = port
        self.cache = SnapshotCache()
        self.registry = SidecarRegistry()
        self.source = BaseSource(mesh, self.cache, slots)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Serve, and say so to health checks; returns the port bound."""
        server = grpc.aio.server(options=XDS_SERVER_OPTIONS)
        served = add_xds_services(server, self.cache, self.registry, self.source, per_type=False)
        self.port = server.add_insecure_port(listen_address(self.host, self.port))
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        await server.start()
        self._server = server
        for service in ("", *served):
            await checks.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("base control server started", xds=listen_address(self.host, self.port))
        return self.port

    async def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m faultplane.demo.base_server")
    parser.add_argument("--mesh", type=Path, required=True, help="the (resolved) mesh model")
    parser.add_argument("--port", type=int, required=True, help="the ADS port, on 127.0.0.1")
    parser.add_argument(
        "--slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"fault slots per direction in every HCM (default {DEFAULT_SLOTS})",
    )
    args = parser.parse_args(argv)
    logs.configure()
    asyncio.run(_serve(load_mesh(args.mesh), args.port, args.slots))


async def _serve(mesh: Mesh, port: int, slots: int) -> None:
    server = BaseServer(mesh, port, slots)
    await server.start()
    try:
        await until_signalled()
    finally:
        await server.stop()


if __name__ == "__main__":
    main()
