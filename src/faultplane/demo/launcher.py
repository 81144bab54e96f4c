"""Brings the demo mesh up on loopback: control server, apps, Envoy sidecars, load.

Start order is dependency order, each step awaited before the next: the control server
answers health checks before any sidecar starts, every sidecar is LIVE (all of its
listeners and routes warmed from ADS) before load starts, so the first request already
runs through a converged mesh. Everything started is stopped by PID, in reverse order,
even when start-up fails half-way.

With `overlay`, the sidecars' listeners, routes and clusters come from a second control
plane started first (faultplane.demo.overlay_run), faultplane runs as `serve --overlay`,
and a sidecar is ready once it is also attached to faultplane's fault layer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultplane.demo.bootstrap import render_bootstrap, template_beside
from faultplane.demo.overlay_run import OverlayMesh
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, ProcessGroup, envoy_binary, wait_until
from faultplane.demo.replicas import Replica, plan_replicas, with_xds_endpoints
from faultplane.model.mesh import Mesh, Pod, load_mesh
from faultplane.server.config import HOST

START_TIMEOUT = 60.0
# The dashboard's port with --declared-ports (beside the mesh's 18000-18002); otherwise a
# free one. A server_args `--web-listen` overrides both.
DECLARED_WEB_PORT = 18003


@dataclass
class PodProcesses:
    pod: Pod
    app: Child
    envoy: Child


class MeshRun:
    def __init__(
        self,
        mesh_file: Path,
        run_dir: Path,
        declared_ports: bool = False,
        server_args: tuple[str, ...] = (),
        load: bool = True,
        mesh: Mesh | None = None,
        spawn_server: bool = True,
        overlay: bool = False,
        istio_nodes: Collection[str] = (),
        replicas: int = 1,
        store_url: str | None = None,
    ) -> None:
        """`mesh` overrides the file's model (ports included); without `spawn_server` the
        control server is expected to be running already on the mesh's control ports
        (`serve --overlay` there, with `overlay`). `istio_nodes`: in overlay mode, the
        pods whose node metadata is Istio-shaped."""
        self.mesh_file = mesh_file
        self.run_dir = run_dir
        self.declared_ports = declared_ports
        self.server_args = server_args
        self.with_load = load
        self.mesh: Mesh | None = mesh
        self.spawn_server = spawn_server
        self.with_overlay = overlay
        self.istio_nodes = tuple(istio_nodes)
        self.overlay: OverlayMesh | None = None  # set on start, with `overlay`
        self.base_server: Child | None = None
        self.server: Child | None = None
        self.pods: list[PodProcesses] = []
        self.loadgen: Child | None = None
        self.loadgen_port: int | None = None
        self.web_port: int | None = None  # the dashboard, when this run spawns the server
        self._processes = ProcessGroup()
        # Several control-server replicas on one PostgreSQL store (faultplane.demo.replicas):
        # `server` is r1's process, `replicas` every replica's.
        if replicas > 1 and (store_url is None or overlay):
            raise ValueError("replicas: several need a PostgreSQL store (store_url), full mesh")
        self.replica_count = replicas
        self.store_url = store_url
        self.replica_plan: list[Replica] = []
        self.replicas: dict[str, Child] = {}

    async def __aenter__(self) -> MeshRun:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_address(self) -> str:
        assert self.mesh is not None
        return f"{HOST}:{self.mesh.control.api_port}"

    @property
    def web_url(self) -> str | None:
        """The dashboard's address (None when the server is not this run's, or its
        server_args chose the address)."""
        return f"http://{HOST}:{self.web_port}/" if self.web_port else None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        allocate = PortAllocator()
        chosen = any(arg.startswith("--web-listen") for arg in self.server_args)
        if self.spawn_server and not chosen:
            self.web_port = DECLARED_WEB_PORT if self.declared_ports else allocate()
        mesh = self.mesh or load_mesh(self.mesh_file)
        if self.mesh is None and not self.declared_ports:
            mesh = mesh.with_ports(allocate)
        self.mesh = mesh
        if self.store_url is not None:
            self.replica_plan = plan_replicas(mesh.control, self.replica_count, allocate)
        resolved = self.run_dir / "mesh.yaml"
        resolved.write_text(yaml.safe_dump(mesh.to_dict(), sort_keys=False))

        if self.with_overlay:
            self.overlay = OverlayMesh.of(allocate(), self.mesh_file, self.istio_nodes)
            self.base_server = self._processes.spawn(
                self.overlay.base_server(resolved, self.run_dir)
            )
            await self.wait_base_server_healthy()
        if self.spawn_server:
            await self._start_server(resolved)
        await self._start_pods(mesh)
        if self.with_load and mesh.load is not None:
            await self._start_load(mesh, allocate())

    def stop(self) -> None:
        self._processes.stop_all()

    def restart_server(self, kill: bool = False) -> Child:
        """A fresh control-server process on the same ports and store (restart tests);
        with `kill`, the old one is SIGKILLed, as in a crash."""
        old = self.server
        assert old is not None
        new = Child("control-server", old.argv, old.log_path)
        self.server = self._processes.replace(old, new, kill)
        return self.server

    def restart_replica(self, name: str, kill: bool = False) -> Child:
        """A fresh process for replica `name` on the same ports and store."""
        self.replicas[name] = self._processes.replace(
            self.replicas[name], _restarted(self.replicas[name]), kill
        )
        return self.replicas[name]

    def restart_base_server(self, kill: bool = False) -> Child:
        """A fresh base control server (overlay mode) on the same port: the other control
        plane restarting under faultplane's feet; with `kill`, as in a crash."""
        assert self.base_server is not None, "not an overlay run"
        self.base_server = self._processes.replace(
            self.base_server, _restarted(self.base_server), kill
        )
        return self.base_server

    async def wait_base_server_healthy(self) -> None:
        assert self.overlay is not None and self.base_server is not None
        address = self.overlay.address
        await wait_until(
            lambda: grpc_serving(address), START_TIMEOUT, "base control server", [self.base_server]
        )

    def restart_sidecar(self, pod_name: str, kill: bool = True) -> Child:
        """A fresh Envoy for one pod, from the same bootstrap (a sidecar crash and restart);
        it logs beside the first one's log."""
        pod = next(p for p in self.pods if p.pod.name == pod_name)
        pod.envoy = self._processes.replace(pod.envoy, _restarted(pod.envoy), kill)
        return pod.envoy

    async def wait_server_healthy(self) -> None:
        children = [self.server] if self.server is not None else []
        await wait_until(
            lambda: grpc_serving(self.api_address), START_TIMEOUT, "control server", children
        )

    def state(self) -> dict[str, Any]:
        """What `mesh up` writes to its state file: every address and PID of the mesh."""
        assert self.mesh is not None
        control = self.mesh.control
        return {
            "api": self.api_address,
            "xds": f"{HOST}:{control.xds_port}",
            "metrics": f"{HOST}:{control.metrics_port}",
            "web": self.web_url,
            "server_pid": self.server.pid if self.server else None,
            "loadgen": f"{HOST}:{self.loadgen_port}" if self.loadgen_port else None,
            "loadgen_pid": self.loadgen.pid if self.loadgen else None,
            "run_dir": str(self.run_dir),
            "base_xds": self.overlay.address if self.overlay else None,
            "base_server_pid": self.base_server.pid if self.base_server else None,
            "replicas": [
                {
                    "name": r.name,
                    "api": f"{HOST}:{r.api_port}",
                    "xds": f"{HOST}:{r.xds_port}",
                    "pid": self.replicas[r.name].pid if r.name in self.replicas else None,
                }
                for r in self.replica_plan
            ],
            "pods": [
                {
                    "pod": p.pod.name,
                    "service": p.pod.service,
                    "labels": dict(p.pod.labels),
                    "pid": p.envoy.pid,
                    "app_pid": p.app.pid,
                    "admin": f"{HOST}:{p.pod.ports.admin}",
                    "ingress": f"{HOST}:{p.pod.ports.ingress}",
                    "egress": f"{HOST}:{p.pod.ports.egress}",
                    "app": f"{HOST}:{p.pod.ports.app}",
                }
                for p in self.pods
            ],
        }

    def write_state(self, path: Path) -> None:
        """Atomically, so a reader never sees half a file."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.state(), indent=2) + "\n")
        partial.replace(path)

    async def load_stats(self, stop: bool = False) -> dict[str, Any]:
        """The load generator's counts; with `stop`, after it stopped and drained."""
        assert self.loadgen_port is not None, "no load generator in this run"
        url = f"http://{HOST}:{self.loadgen_port}/{'stop' if stop else 'stats'}"
        async with aiohttp.ClientSession() as session:
            request = session.post(url) if stop else session.get(url)
            async with request as response:
                return dict(await response.json())

    async def _start_server(self, resolved_mesh: Path) -> None:
        assert self.mesh is not None
        if self.overlay is not None:
            mode = self.overlay.serve_args(self.mesh.control)
        else:
            mode = ["--mesh", str(resolved_mesh)]
        # The local mesh is a single-user demo on loopback: no tokens; its own store.
        argv = [sys.executable, "-m", "faultplane", "serve", *mode, "--auth", "local"]
        catalogue = self.mesh_file.parent / "slos.yaml"
        if "--slos" not in self.server_args and catalogue.exists():
            argv += ["--slos", str(catalogue)]  # the mesh's SLO catalogue, by default
        argv += self.server_args
        if not self.replica_plan:
            store = ["--db", str(self.run_dir / "faultplane.db")]
            web = ["--web-listen", f"{HOST}:{self.web_port}"] if self.web_port else []
            self.server = self._processes.spawn(
                Child("control-server", [*argv, *store, *web], self.run_dir / "server.log")
            )
            await self.wait_server_healthy()
            return
        assert self.store_url is not None
        for replica in self.replica_plan:
            extra = replica.serve_args(self.store_url, self.run_dir)
            if replica is self.replica_plan[0] and self.web_port:
                extra += ["--web-listen", f"{HOST}:{self.web_port}"]
            log = self.run_dir / f"server-{replica.name}.log"
            self.replicas[replica.name] = self._processes.spawn(
                Child(f"control-server {replica.name}", [*argv, *extra], log)
            )
        self.server = self.replicas[self.replica_plan[0].name]
        for replica in self.replica_plan:
            address = f"{HOST}:{replica.api_port}"
            children = list(self.replicas.values())
            what = f"control server {replica.name}"
            await wait_until(lambda a=address: grpc_serving(a), START_TIMEOUT, what, children)

    async def _start_pods(self, mesh: Mesh) -> None:
        envoy = envoy_binary()
        for pod in mesh.pods:
            deps = [
                a for dep in mesh.services[pod.service].dependencies for a in ("--dependency", dep)
            ]
            app = self._processes.spawn(
                Child(
                    f"app {pod.name}",
                    [
                        sys.executable, "-m", "faultplane.demo.app",
                        "--service", pod.service, "--pod", pod.name,
                        "--port", str(pod.ports.app), "--egress-port", str(pod.ports.egress),
                        *deps,
                    ],
                    self.run_dir / f"app-{pod.name}.log",
                )
            )  # fmt: skip
            bootstrap = self.run_dir / f"envoy-{pod.name}.yaml"
            bootstrap.write_text(self._bootstrap(pod))
            sidecar = self._processes.spawn(
                Child(
                    f"envoy {pod.name}",
                    envoy_argv(envoy, bootstrap),
                    self.run_dir / f"envoy-{pod.name}.log",
                )
            )
            self.pods.append(PodProcesses(pod, app, sidecar))
        for p in self.pods:
            await wait_until(
                lambda p=p: _http_ok(f"http://{HOST}:{p.pod.ports.app}/healthz"),
                START_TIMEOUT, f"app {p.pod.name}", [p.app],
            )  # fmt: skip
            await wait_until(
                lambda p=p: _http_ok(f"http://{HOST}:{p.pod.ports.admin}/ready"),
                START_TIMEOUT, f"sidecar {p.pod.name} to be LIVE", [p.envoy],
            )  # fmt: skip
            if (overlay := self.overlay) is not None:  # LIVE even if faultplane is down
                await wait_until(
                    lambda p=p: overlay.attached(f"{HOST}:{p.pod.ports.admin}"),
                    START_TIMEOUT, f"sidecar {p.pod.name} to attach to faultplane", [p.envoy],
                )  # fmt: skip

    def _bootstrap(self, pod: Pod) -> str:
        assert self.mesh is not None
        xds_port = self.mesh.control.xds_port
        if self.overlay is not None:
            return self.overlay.bootstrap(pod, xds_port)
        rendered = render_bootstrap(template_beside(self.mesh_file), pod, HOST, xds_port)
        if len(self.replica_plan) > 1:  # every replica, for Envoy to fail over between
            return with_xds_endpoints(rendered, HOST, [r.xds_port for r in self.replica_plan])
        return rendered

    async def _start_load(self, mesh: Mesh, port: int) -> None:
        assert mesh.load is not None
        load = mesh.load
        targets = [
            a
            for pod in mesh.services[load.service].pods
            for a in ("--target", str(pod.ports.ingress))
        ]
        self.loadgen_port = port
        self.loadgen = self._processes.spawn(
            Child(
                "loadgen",
                [
                    sys.executable, "-m", "faultplane.demo.loadgen", "--port", str(port),
                    "--method", load.method, "--path", load.path,
                    "--rate", str(load.rate_per_second), *targets,
                ],
                self.run_dir / "loadgen.log",
            )
        )  # fmt: skip
        await wait_until(
            lambda: _http_ok(f"http://{HOST}:{port}/stats"),
            START_TIMEOUT,
            "loadgen",
            [self.loadgen],
        )


def _restarted(child: Child) -> Child:
    """A fresh process like `child`, logging beside the first one's log."""
    log = child.log_path.with_name(child.log_path.stem + "-restarted.log")
    return Child(child.name, child.argv, log)


def envoy_argv(envoy: str, bootstrap: Path) -> list[str]:
    """One worker thread per sidecar: a mesh of seven shares two cores with its apps."""
    return [
        envoy, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
        "--log-level", "warning", "--drain-time-s", "1",
    ]  # fmt: skip


async def _http_ok(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def grpc_serving(address: str) -> bool:
    """Whether the control server at `address` answers health checks with SERVING."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
