"""How node agents' pods appear in the operator API: as targets in ListSidecars, and as
nftables transactions in a plan."""

from __future__ import annotations

from faultplane.api.convert import timestamp, xds_statuses
from faultplane.delivery.agents import agent_pods, is_agent_node, nft_commands, split_target
from faultplane.delivery.plane import FaultPlane
from faultplane.delivery.with_agents import PlaneWithAgents
from faultplane.render.resources import Resources
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from faultplane.xds.registry import SidecarStatus


def is_agent(sidecar: SidecarStatus) -> bool:
    return is_agent_node(sidecar.metadata)


def agent_pod_messages(sidecar: SidecarStatus) -> list[pb.Sidecar]:
    """An agent's pods, each a `Sidecar` of kind "agent" named agent/<agent>/<pod>, with
    the agent's connection, its kernel-fault evidence and capabilities."""
    xds = xds_statuses(sidecar, (types.NETWORK_FAULT,))
    messages = []
    for pod in agent_pods(sidecar):
        note = "" if pod.netem else f"no latency: no netem ({pod.netem_reason or 'not reported'})"
        messages.append(
            pb.Sidecar(
                node_id=pod.node_id,
                cluster=sidecar.cluster,
                service=pod.service,
                labels=dict(pod.labels),
                connected=sidecar.connected,
                connected_at=timestamp(sidecar.connected_at),
                xds=xds,
                kind="agent",
                capabilities=list(pod.kinds),
                capability_note=note,
                netns=pod.netns,
            )
        )
    return messages


def is_agent_target(node: str) -> bool:
    return split_target(node) is not None


def agent_pod_plan(target: str, rendered: Resources, plane: FaultPlane) -> pb.AgentPodPlan:
    """The nftables transaction the pod's agent would run, one command per entry."""
    split = split_target(target)
    assert split is not None, target
    pod = plane.agents.pod(target) if isinstance(plane, PlaneWithAgents) else None
    return pb.AgentPodPlan(
        target=target,
        agent=split[0],
        pod=split[1],
        netns=pod.netns if pod else "",
        nft_commands=nft_commands(target, rendered),
    )
