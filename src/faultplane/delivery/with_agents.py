"""One fault plane over sidecars and node agents' pods, so the scheduler sees one fleet.

Wraps the server's plane (faultplane's own mesh, or overlay) and the agent plane
(faultplane.delivery.agents), routing each call by target: `agent/<agent>/<pod>` goes
to the agents, anything else to the sidecars. Selection, `max_pods`, the overlap check,
leases and evidence are the scheduler's as before; only where a change lands differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from faultplane.delivery.agents import AgentPlane, AgentRefusal, is_agent_node, split_target
from faultplane.delivery.identity import Identity
from faultplane.delivery.overlay import OverlaySource
from faultplane.delivery.plane import Candidate
from faultplane.delivery.source import MeshSource
from faultplane.kernel.fault import NetworkFaultSpec
from faultplane.render.faults import FaultAssignment
from faultplane.render.resources import Resources
from faultplane.xds import types
from faultplane.xds.registry import AckOutcome, Answer, SidecarStatus, one_answer


class PlaneWithAgents:
    """A FaultPlane and ResourceSource: `inner` for sidecars, `agents` for agent pods."""

    def __init__(self, inner: MeshSource | OverlaySource, agents: AgentPlane) -> None:
        self.inner = inner
        self.agents = agents
        self.arm_type = inner.arm_type

    def ensure(self, node: base_pb2.Node) -> None:
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        if is_agent_node(metadata):
            self.agents.ensure(node)
        else:
            self.inner.ensure(node)

    def candidates(self, service: str, namespace: str | None = None) -> Sequence[Candidate]:
        sidecars = [
            s
            for s in self.inner.candidates(service, namespace)
            if not is_agent_node(getattr(s, "metadata", {}))
        ]
        return [*sidecars, *self.agents.candidates(service, namespace)]

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources:
        if split_target(node_id):
            return self.agents.render(node_id, faults)
        if any(isinstance(f.fault.kind, NetworkFaultSpec) for f in faults):
            raise AgentRefusal(
                f"a kernel fault needs a node agent's pod, and {node_id} is an Envoy sidecar "
                "(select the service's agent pods, or drop layer: kernel)"
            )
        return self.inner.render(node_id, faults)

    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]:
        if split_target(node_id):
            return self.agents.set_faults(node_id, faults, lease_until)
        return self.inner.set_faults(node_id, faults, lease_until)

    def is_connected(self, node_id: str) -> bool:
        if split_target(node_id):
            return self.agents.is_connected(node_id)
        return self.inner.is_connected(node_id)

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        return await one_answer(self.wait_many, node_id, type_url, generation, timeout)

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """Both planes' waits at once, answers in the order asked."""
        pods = [w for w in waits if split_target(w[0])]
        sidecars = [w for w in waits if not split_target(w[0])]
        pod_answers, sidecar_answers = await asyncio.gather(
            self.agents.wait_many(pods, type_url, timeout) if pods else _none(),
            self.inner.wait_many(sidecars, type_url, timeout) if sidecars else _none(),
        )
        by_pod, by_sidecar = iter(pod_answers), iter(sidecar_answers)
        return [next(by_pod) if split_target(w[0]) else next(by_sidecar) for w in waits]

    def evidence_type(self, node_id: str, type_url: str) -> str:
        """The type an answer is evidence about: an agent pod's is always its kernel set."""
        return types.NETWORK_FAULT if split_target(node_id) else type_url

    def departed(self, before: float) -> list[str]:
        return self.inner.departed(before)

    def forget(self, node_id: str) -> bool:
        """Never forget an agent whose pods carry a fault (its desired state is theirs)."""
        if self.agents.holds(node_id):
            return False
        return self.inner.forget(node_id)

    def identity(self, sidecar: SidecarStatus) -> Identity:
        if is_agent_node(sidecar.metadata):
            return Identity("", {}, None, sidecar.node_id)
        return self.inner.identity(sidecar)

    def stats_address(self, node_id: str) -> str | None:
        if split_target(node_id):
            return self.agents.stats_address(node_id)
        return self.inner.stats_address(node_id)


async def _none() -> list[Answer]:
    return []
