"""Meshes of real Envoy sidecars for the scenarios that need traffic.

`shared_mesh` is one service of 10 pods (app + Envoy each), started once per run and
reused by every scenario that needs it, on free loopback ports, with a short dead-man
TTL so that the dead-man scenario stays quick.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bench import api
from bench.core import Context
from bench.meshes import real_mesh, write_mesh
from faultplane.demo.launcher import MeshRun
from faultplane.model.mesh import Mesh

SERVICE = "bench"
PODS = 10
DEADMAN_TTL = 3.0


@dataclass
class SidecarMesh:
    run: MeshRun
    mesh: Mesh
    service: str
    deadman_ttl: float

    @property
    def api(self) -> str:
        return self.run.api_address

    def ingress_urls(self, path: str = "/probe") -> list[str]:
        return [
            f"http://127.0.0.1:{pod.ports.ingress}{path}"
            for pod in self.mesh.services[self.service].pods
        ]

    def url_of(self, pod_name: str, path: str = "/probe") -> str:
        pod = self.mesh.pod(pod_name)
        assert pod is not None
        return f"http://127.0.0.1:{pod.ports.ingress}{path}"

    async def wait_ready(self) -> None:
        async with api.connect(self.api) as client:
            await client.wait_connected(self.service, len(self.mesh.services[self.service].pods))

    async def restart_server(self) -> None:
        """A fresh control-server process on the same ports; sidecars reconnect to it."""
        self.run.restart_server()
        await self.run.wait_server_healthy()
        await self.wait_ready()


async def start_mesh(
    directory: Path,
    service: str,
    pods: int,
    deadman_ttl: float,
    extra_args: tuple[str, ...] = (),
) -> SidecarMesh:
    mesh = real_mesh(service, pods)
    mesh_file = write_mesh(mesh, directory)
    # No baseline wait: a benchmark's mesh is seconds old (the launcher loads slos.yaml).
    args = (
        "--deadman-ttl", str(deadman_ttl), "--ack-timeout", "10",
        "--baseline-min-seconds", "0", *extra_args,
    )  # fmt: skip
    run = MeshRun(mesh_file, directory / "run", load=False, server_args=args, mesh=mesh)
    await run.__aenter__()
    started = SidecarMesh(run, mesh, service, deadman_ttl)
    try:
        await started.wait_ready()
    except BaseException:
        run.stop()
        raise
    return started


async def shared_mesh(ctx: Context) -> SidecarMesh:
    found = ctx.shared.get("mesh")
    if found is None:
        found = await start_mesh(ctx.dir("mesh"), SERVICE, PODS, DEADMAN_TTL)
        ctx.shared["mesh"] = found

        async def close() -> None:
            with contextlib.suppress(Exception):
                found.run.stop()
            ctx.shared.pop("mesh", None)

        ctx.closers.append(close)
    assert isinstance(found, SidecarMesh)
    return found


async def close_shared_mesh(ctx: Context) -> None:
    mesh = ctx.shared.pop("mesh", None)
    if isinstance(mesh, SidecarMesh):
        mesh.run.stop()
