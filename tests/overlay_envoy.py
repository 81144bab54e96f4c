"""Real Envoys attached to a real `faultplane serve --overlay`, for the overlay tests.

The bootstrap builders are the one way the tests turn `faultplane overlay envoy --json`
into an Envoy config: a static bootstrap owning its listeners and clusters, as a user's
own config would, plus the snippet's parts pasted where the CLI says they go. The rig
(`OverlayRig`) runs the server as a child process (a SIGKILL test needs a process), demo
apps as upstreams, and Envoys from such bootstraps; every process is stopped by PID.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from faultplane.demo.launcher import envoy_argv
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, ProcessGroup, envoy_binary, wait_until
from faultplane.render.overlay_config import HCM_FILTER, ROUTER_FILTER
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.cli_processes import START_TIMEOUT, Server
from tests.helpers import admin_json, injection_request, run_cli, wait_state

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM = "app"  # the cluster of the sidecar's own app (inbound traffic's destination)
DEPENDENCIES = ("fraud-scoring", "ledger")  # outbound clusters, reached by Host header
DIRECTIONS = ("inbound", "outbound")
# Every test's SLO: inbound success of a service, read from the sidecars' stats_address.
SLO_CATALOGUE = """
slos:
  payments-inbound:
    service: payments-api
    stat_prefix: inbound
  checkout-inbound:
    service: checkout
    stat_prefix: inbound
"""
# The states an injection leaves PENDING for, and those it ends in.
SETTLED = frozenset({pb.ACTIVE, pb.COMPLETED, pb.ABORTED, pb.FAILED})
FINISHED = SETTLED - {pb.ACTIVE}
RPC_TIMEOUT = 10.0
# What reading a process's HTTP endpoint raises while it is not (yet) listening.
UNREACHABLE = (aiohttp.ClientError, OSError, ValueError)
# A sidecar holds faultplane's answer for its layer and slots ~1-2 s after start; on a
# loaded 2-core machine with a dozen processes starting, allow much more.
ATTACH_TIMEOUT = 60.0


def overlay_bootstrap(
    snippet: Mapping[str, Any],
    admin_port: int,
    upstream_port: int,
    listener_ports: Mapping[str, int],
    node: Mapping[str, Any] | None = None,
    dependencies: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A static bootstrap that owns its own listeners and upstreams, plus the snippet's
    parts where the CLI says they go: one listener per direction with that direction's
    slots before the router, the snippet's cluster beside the upstreams, its layer
    appended. The outbound listener routes to each of `dependencies` (cluster name ->
    port) by Host header; everything else goes to UPSTREAM."""
    dependencies = dependencies or {}
    listeners = [
        hcm_listener(
            direction,
            port,
            snippet["http_filters"][direction],
            dependencies if direction == "outbound" else (),
        )
        for direction, port in listener_ports.items()
    ]
    upstreams = {UPSTREAM: upstream_port, **dependencies}
    return {
        "node": dict(node or {"id": "overlay-config-test", "cluster": "overlay-config-test"}),
        "admin": {"address": _socket("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                *(static_cluster(name, port) for name, port in upstreams.items()),
                *snippet["clusters"],
            ],
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}, *snippet["layers"]]},
    }


def hcm_listener(
    name: str, port: int, slots: Sequence[Mapping[str, Any]], dependencies: Sequence[str] = ()
) -> dict[str, Any]:
    """A listener routing through `slots`, then the router: a request whose Host names
    one of `dependencies` goes to that cluster, any other to UPSTREAM."""
    everything = [{"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM}}]
    hosts = [
        {
            "name": dep,
            "domains": [dep],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": dep}}],
        }
        for dep in dependencies
    ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "route_config": {
            "virtual_hosts": [*hosts, {"name": name, "domains": ["*"], "routes": everything}]
        },
        "http_filters": [*slots, {"name": ROUTER_FILTER, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "name": name,
        "address": _socket("127.0.0.1", port),
        "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}],
    }


def static_cluster(name: str, port: int) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": _socket("127.0.0.1", port)}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def without_slots(snippet: Mapping[str, Any], direction: str) -> dict[str, Any]:
    """The snippet as pasted by a user who left out one direction's slots."""
    return {**snippet, "http_filters": {**snippet["http_filters"], direction: []}}


@dataclass
class Sidecar:
    """One Envoy of the rig: its node id, admin and listener addresses, its process."""

    node_id: str
    admin: str
    inbound: str  # http://127.0.0.1:PORT
    outbound: str
    child: Child
    slots: tuple[str, ...]  # the slot names its bootstrap declares


async def slot_faults(admin: str) -> dict[str, dict[str, Any]]:
    """Per ECDS slot, the HTTPFault the Envoy holds (without "@type"; {} = HTTPFault{})."""
    dump = await admin_json(admin, "/config_dump?resource=ecds_filters")
    found = {}
    for config in dump.get("configs", []):
        extension = config["ecds_filter"]
        typed = {k: v for k, v in extension.get("typed_config", {}).items() if k != "@type"}
        found[extension["name"]] = typed
    return found


async def stat_values(admin: str, contains: str) -> dict[str, int]:
    """The Envoy's counters and gauges whose name matches the regex `contains`."""
    stats = await admin_json(admin, f"/stats?format=json&filter={contains}")
    return {
        s["name"]: s["value"] for s in stats.get("stats", []) if isinstance(s.get("value"), int)
    }


async def attached(sidecar: Sidecar) -> bool:
    """Whether the Envoy accepted faultplane's runtime layer and every slot it declares
    (Envoy goes LIVE without faultplane, after the layer's 1 s fetch timeout)."""
    try:
        values = await stat_values(sidecar.admin, "update_success")
    except UNREACHABLE:
        return False
    names = ["runtime.update_success"] + [
        f"extension_config_discovery.http_filter.{slot}.update_success" for slot in sidecar.slots
    ]
    return all(values.get(name, 0) >= 1 for name in names)


async def streams_connected(sidecar: Sidecar) -> bool:
    """Whether every xDS stream the Envoy opens to faultplane (its layer, each declared
    slot) is connected now, by Envoy's own gauges."""
    try:
        values = await stat_values(sidecar.admin, "control_plane.connected_state")
    except UNREACHABLE:
        return False
    names = ["runtime.control_plane.connected_state"] + [
        f"extension_config_discovery.http_filter.{slot}.control_plane.connected_state"
        for slot in sidecar.slots
    ]
    return all(values.get(name) == 1 for name in names)


class OverlayRig:
    """`faultplane serve --overlay` (restartable in place, on the same store), the demo
    app as the sidecars' own app and as each dependency, and Envoys built from the
    snippet `faultplane overlay envoy --json` prints."""

    def __init__(self, run_dir: Path, *serve_flags: str) -> None:
        self.run_dir = run_dir
        self.ports = PortAllocator()
        api, xds = self.ports(), self.ports()
        catalogue = run_dir / "slos.yaml"
        db = run_dir / "faultplane.db"
        argv = [
            sys.executable, "-m", "faultplane", "serve", "--overlay", "--auth", "local",
            "--db", str(db), "--slos", str(catalogue), "--baseline-min-seconds", "0",
            "--api-listen", f"127.0.0.1:{api}", "--xds-listen", f"127.0.0.1:{xds}",
            "--metrics-port", "0", *serve_flags,
        ]  # fmt: skip
        self.server = Server(
            f"127.0.0.1:{api}", f"127.0.0.1:{xds}", db, argv, run_dir / "serve.log"
        )
        self.snippet: dict[str, Any] = {}
        self.apps: dict[str, int] = {}
        self._processes = ProcessGroup()
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "slos.yaml").write_text(SLO_CATALOGUE)
        code, out, err = await run_cli(
            "overlay", "envoy", "--xds-address", self.server.xds, "--json"
        )
        assert code == 0, err
        self.snippet = json.loads(out)
        for service in (UPSTREAM, *DEPENDENCIES):
            port = self.apps[service] = self.ports()
            self._processes.spawn(
                Child(
                    f"app {service}",
                    [
                        sys.executable, "-m", "faultplane.demo.app", "--service", service,
                        "--pod", f"{service}-0", "--port", str(port),
                        "--egress-port", str(self.ports()),
                    ],
                    self.run_dir / f"app-{service}.log",
                )
            )  # fmt: skip
        self.server.start()
        for service, port in self.apps.items():
            await wait_until(lambda port=port: app_up(port), START_TIMEOUT, f"app {service}")
        await self.server.healthy()

    @property
    def stub(self) -> faultplane_pb2_grpc.FaultServiceStub:
        """A stub for the server's API (one channel, opened on first use, on the loop of
        the tests that use it; it reconnects by itself across server restarts)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.server.api)
        return faultplane_pb2_grpc.FaultServiceStub(self._channel)

    async def sidecar(
        self,
        node_id: str,
        metadata: Mapping[str, Any],
        cluster: str = "",
        slots: Sequence[str] = DIRECTIONS,
        attach: bool = True,
    ) -> Sidecar:
        """An Envoy with node `node_id` and `metadata` (plus `stats_address`: its admin),
        declaring the slots of the directions in `slots`; waits until it is LIVE and
        (`attach`) attached."""
        snippet = self.snippet
        for direction in set(DIRECTIONS) - set(slots):
            snippet = without_slots(snippet, direction)
        admin, inbound, outbound = self.ports(), self.ports(), self.ports()
        # On loopback every sidecar shares one IP, so Istio's rule (stats at the first
        # INSTANCE_IPS, port 15090) cannot reach each one's own stats: the explicit key
        # does, and wins, as on an Istio node that sets it.
        node_metadata = {**metadata, "stats_address": f"127.0.0.1:{admin}"}
        bootstrap = overlay_bootstrap(
            snippet,
            admin,
            self.apps[UPSTREAM],
            {"inbound": inbound, "outbound": outbound},
            node={"id": node_id, "cluster": cluster or node_id, "metadata": node_metadata},
            dependencies={dep: self.apps[dep] for dep in DEPENDENCIES},
        )
        path = self.run_dir / f"envoy-{node_id}-{admin}.json"
        path.write_text(json.dumps(bootstrap, indent=2))
        child = self._processes.spawn(
            Child(f"envoy {node_id}", envoy_argv(envoy_binary(), path), path.with_suffix(".log"))
        )
        declared = tuple(f["name"] for d in DIRECTIONS for f in snippet["http_filters"][d])
        sidecar = Sidecar(
            node_id, f"127.0.0.1:{admin}", f"http://127.0.0.1:{inbound}",
            f"http://127.0.0.1:{outbound}", child, declared,
        )  # fmt: skip
        await self.wait_live(sidecar, attach)
        return sidecar

    async def wait_live(self, sidecar: Sidecar, attach: bool = True) -> None:
        await wait_until(
            lambda: envoy_live(sidecar.admin),
            ATTACH_TIMEOUT,
            f"{sidecar.node_id} LIVE",
            [sidecar.child],
        )
        if attach:
            await wait_until(
                lambda: attached(sidecar),
                ATTACH_TIMEOUT,
                f"{sidecar.node_id} attached",
                [sidecar.child],
            )

    def restart_sidecar(self, sidecar: Sidecar) -> None:
        """SIGKILL the Envoy and start a fresh one from the same bootstrap (a crash)."""
        old = sidecar.child
        log = old.log_path.with_name(old.log_path.stem + "-restarted.log")
        sidecar.child = self._processes.replace(old, Child(old.name, old.argv, log), kill=True)

    async def inject(self, request: pb.InjectionRequest) -> pb.Injection:
        return await inject(self.stub, request)

    async def abort_all(self) -> None:
        """Withdraw every live injection and wait until each has ended."""
        reply = await self.stub.AbortAllInjections(
            pb.AbortAllInjectionsRequest(reason="test cleanup"), timeout=RPC_TIMEOUT
        )
        for injection in reply.aborted:
            await wait_state(self.stub, injection.id, set(FINISHED), 30.0)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def stop(self) -> None:
        self.server.stop()
        self._processes.stop_all()


async def inject(
    stub: faultplane_pb2_grpc.FaultServiceStub, request: pb.InjectionRequest, timeout: float = 30.0
) -> pb.Injection:
    """Create the injection and wait until it is ACTIVE (every target ACKed)."""
    created = await stub.CreateInjection(request, timeout=RPC_TIMEOUT)
    injection = await wait_state(stub, created.id, set(SETTLED), timeout)
    assert injection.state == pb.ACTIVE, f"{pb.State.Name(injection.state)}: {injection.reason}"
    return injection


@asynccontextmanager
async def running_rig(run_dir: Path, *serve_flags: str) -> AsyncIterator[OverlayRig]:
    """A started rig, every process of it stopped by PID on the way out."""
    rig = OverlayRig(run_dir, *serve_flags)
    try:
        await rig.start()
        yield rig
    finally:
        await rig.close()
        rig.stop()


async def envoy_live(admin: str) -> bool:
    """Whether the Envoy's listeners accept traffic (server.state 0: LIVE)."""
    try:
        return (await stat_values(admin, "^server.state$")).get("server.state") == 0
    except UNREACHABLE:
        return False


async def app_up(port: int) -> bool:
    try:
        return bool(await admin_json(f"127.0.0.1:{port}", "/healthz"))
    except UNREACHABLE:
        return False


def overlay_request(
    target: dict[str, Any], fault: dict[str, Any], slo: str = "payments-inbound", **top: Any
) -> pb.InjectionRequest:
    """An injection request guarded by one of the rig's SLOs, which no test breaches by
    accident (min 0, abort after 10 minutes)."""
    steady = {"slo": slo, "min": 0.0, "abort_after": 600}
    return injection_request(target, fault, steady_state=steady, **top)
