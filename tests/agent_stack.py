"""A control server (`faultplane serve`) and a node agent (`faultplane agent`) as child
processes, for the tests that drive kernel faults through the operator API (root only).

The agent hosts one pod, the `pod` side of a veth link (tests.netns) whose far side runs a
TCP sink: what a fault does is seen in `nft list ruleset` of the pod's namespace and in
connects from it. Both children can be SIGKILLed and started again on the same ports (the
xDS address the agent dials does not change), and both are stopped by PID at the end.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format

from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.kernel import ruleset
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import ROOT
from tests.netns import Link
from tests.netns import ruleset as list_ruleset
from tests.test_auth_e2e import _wait_serving

SLOS_FILE = ROOT / "envoy-configs" / "slos.yaml"
POD = "app-1"
SERVICE = "orders-app"
PORT = 5432


@dataclass
class AgentStack:
    link: Link
    run_dir: Path
    agent_name: str
    ttl: float
    ports: PortAllocator = field(default_factory=PortAllocator)
    server: Child | None = None
    agent: Child | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.api_port, self.xds_port = self.ports(), self.ports()
        self.metrics_port = self.ports()
        self.db = self.run_dir / "faultplane.db"

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def target(self) -> str:
        return f"agent/{self.agent_name}/{POD}"

    @property
    def table(self) -> str:
        return ruleset.table_name(self.agent_name)

    def start_server(self) -> Child:
        self.starts += 1
        argv = [
            sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
            "--slos", str(SLOS_FILE), "--baseline-min-seconds", "0", "--auth", "local",
            "--db", str(self.db), "--api-port", str(self.api_port),
            "--xds-port", str(self.xds_port), "--deadman-ttl", str(self.ttl),
            "--ack-timeout", "15", "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        self.server = Child("serve", argv, self.run_dir / f"serve-{self.starts}.log").start()
        _wait_serving(self.server, self.api, None)
        return self.server

    def start_agent(self) -> Child:
        pods = self.run_dir / "pods.yaml"
        pod = {"name": POD, "service": SERVICE, "labels": {"tier": "web"}, "netns": self.link.pod}
        pods.write_text(yaml.safe_dump({"pods": [pod]}))
        argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods),
                "--xds", f"127.0.0.1:{self.xds_port}", "--name", self.agent_name]  # fmt: skip
        self.agent = Child("agent", argv, self.run_dir / "agent.log").start()
        return self.agent

    def children(self) -> list[Child]:
        return [child for child in (self.server, self.agent) if child is not None]

    def stop(self) -> None:
        for child in (self.agent, self.server):
            if child is not None:
                child.stop(timeout=10)

    def rules(self) -> str:
        """`nft list ruleset` in the pod's namespace."""
        return list_ruleset(self.link.pod)

    def stub(self, channel: grpc.aio.Channel) -> faultplane_pb2_grpc.FaultServiceStub:
        return faultplane_pb2_grpc.FaultServiceStub(channel)

    async def agent_listed(self) -> pb.Sidecar:
        """The agent's pod as ListSidecars shows it, once its agent is connected."""
        found: list[pb.Sidecar] = []

        async def listed() -> bool:
            async with grpc.aio.insecure_channel(self.api) as channel:
                reply = await self.stub(channel).ListSidecars(pb.ListSidecarsRequest())
            found[:] = [s for s in reply.sidecars if s.node_id == self.target and s.connected]
            return bool(found) and any(x.version_acked for x in found[0].xds)

        await wait_until(listed, 60, "the agent's pod to be listed", self.children())
        return found[0]


def kernel_request(
    link: Link, fault: dict[str, Any], duration: float = 120, **top: Any
) -> pb.InjectionRequest:
    """A six-field request for a kernel fault on the agent's pod, towards the far end."""
    document = {
        "target": {"service": SERVICE, "selector": "tier=web", "max_pods": 1},
        "fault": {"layer": "kernel", "cidr": f"{link.far_address}/32", "port": PORT, **fault},
        "duration_seconds": duration,
        "steady_state": {"slo": "merchant-write-success", "min": 0.0, "abort_after": 600},
        "hypothesis": "orders survive a sick database link",
        "owner": "kernel-tests",
        **top,
    }
    return json_format.ParseDict(document, pb.InjectionRequest())
