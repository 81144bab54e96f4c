"""Node agents as a fault plane: their pods are targets, their kernel faults resources.

A node agent (`faultplane agent`) connects over ADS like a sidecar, subscribes to the
NETWORK_FAULT type and describes itself in its node metadata (`faultplane_agent`: its
pods, with service, labels and network namespace, and its kernel's capabilities). Each of
its pods is a target named `agent/<agent>/<pod>`, chosen by selectors and capped by
`max_pods` exactly as sidecars are. The agent's one xDS resource set is the union of its
pods' switched-on kernel faults, one `NetworkFault` per (pod, fault) named `POD/ID`,
leased (TTL) while any is on: the stream machinery re-sends it every third of the TTL and
never past the injection's lease, so a dead control server leaves nothing on for longer
than the TTL (the agent removes a fault whose lease lapses).

Arming is a no-op for a kernel fault (nothing is in the kernel until it is switched on),
so the arm phase's wait is answered by what the agent has already ACKed; switching on
and off are one agent ACK each, given only once nft has the rules (or NACKed with nft's
message). A pod whose agent lacks what a fault needs (latency without netem) or a
sidecar fault on an agent pod is refused at admission, through the plane's `render`
(`AgentRefusal`, which admission reports as FAILED_PRECONDITION naming the target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from faultplane.delivery.identity import Identity, host_port
from faultplane.kernel import ruleset
from faultplane.kernel.fault import NetworkFaultSpec, parse_fault
from faultplane.kernel.kinds import KINDS, kind_of
from faultplane.kernel.v1 import kernel_pb2
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import Answer, SidecarRegistry, SidecarStatus

PREFIX = "agent/"
METADATA_KEY = "faultplane_agent"  # faultplane.agent.xds_client writes its node so


class AgentRefusal(SlotsExhausted):
    """A fault this agent pod cannot carry (a missing capability, a sidecar-only fault).
    A SlotsExhausted, so that admission refuses it as it refuses a sidecar out of slots:
    FAILED_PRECONDITION, naming the target and the reason."""


def target_of(agent: str, pod: str) -> str:
    return f"{PREFIX}{agent}/{pod}"


def split_target(target: str) -> tuple[str, str] | None:
    """(agent, pod) of an agent pod's target name, None for a sidecar's node id."""
    if not target.startswith(PREFIX):
        return None
    agent, sep, pod = target[len(PREFIX) :].rpartition("/")
    return (agent, pod) if sep and agent and pod else None


def is_agent_node(metadata: Mapping[str, Any]) -> bool:
    return isinstance(metadata.get(METADATA_KEY), Mapping)


@dataclass(frozen=True)
class AgentPod:
    """A pod of a connected agent, as selection and ListSidecars see it."""

    agent: str
    name: str
    service: str
    netns: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    kinds: tuple[str, ...] = ()
    netem: bool = False
    netem_reason: str = ""
    stats_address: str | None = None

    @property
    def node_id(self) -> str:
        return target_of(self.agent, self.name)

    def refusal(self, spec: NetworkFaultSpec) -> str | None:
        """Why this pod's agent cannot apply `spec`, or None if it can."""
        kind = kind_of(spec.spec).name
        if kind in self.kinds:
            return None
        if KINDS[kind].needs_netem and not self.netem:
            return (
                f"{kind} needs the netem qdisc, which the kernel of agent {self.agent} lacks "
                f"({self.netem_reason or 'not reported'}); it offers {', '.join(self.kinds)}"
            )
        return f"agent {self.agent} does not offer {kind} (it offers {', '.join(self.kinds)})"


def agent_pods(status: SidecarStatus) -> list[AgentPod]:
    """The pods an agent's node metadata declares (malformed entries are skipped: the
    metadata comes from whoever connected, and reading it never raises)."""
    info = status.metadata.get(METADATA_KEY)
    if not isinstance(info, Mapping):
        return []
    caps = info.get("capabilities") if isinstance(info.get("capabilities"), Mapping) else {}
    kinds = tuple(k for k in caps.get("kinds") or () if isinstance(k, str) and k in KINDS)
    pods = []
    for entry in info.get("pods") or ():
        if not isinstance(entry, Mapping):
            continue
        name, service, netns = (entry.get(k) for k in ("name", "service", "netns"))
        labels = entry.get("labels") if isinstance(entry.get("labels"), Mapping) else {}
        if not all(isinstance(v, str) and v for v in (name, service, netns)):
            continue
        pods.append(
            AgentPod(
                status.node_id,
                name,
                service,
                netns,
                {str(k): str(v) for k, v in labels.items()},
                kinds,
                bool(caps.get("netem")),
                str(caps.get("netem_reason") or ""),
                host_port(entry.get("stats_address")),
            )
        )
    return pods


class AgentPlane:
    """The agent side of the fault plane; `PlaneWithAgents` routes agent targets here."""

    def __init__(self, cache: SnapshotCache, registry: SidecarRegistry, deadman_ttl: float):
        self.deadman_ttl = deadman_ttl
        self._cache = cache
        self._registry = registry
        # agent -> pod -> (its faults, the lease its switched-on faults may not outlive)
        self._faults: dict[str, dict[str, tuple[tuple[FaultAssignment, ...], float | None]]] = {}

    def ensure(self, node: base_pb2.Node) -> None:
        """A new agent's desired state: no faults (its first response, ACKed at once)."""
        if not self._cache.has(node.id):
            self._cache.set_resources(node.id, {types.NETWORK_FAULT: self._resources(node.id)})

    def pods(self, status: SidecarStatus) -> list[AgentPod]:
        return agent_pods(status) if is_agent_node(status.metadata) else []

    def pod(self, target: str) -> AgentPod | None:
        split = split_target(target)
        status = self._registry.get(split[0]) if split else None
        if split is None or status is None:
            return None
        return next((p for p in self.pods(status) if p.name == split[1]), None)

    def candidates(self, service: str, namespace: str | None = None) -> list[AgentPod]:
        """Pods of connected agents of `service` (agent pods name no namespace)."""
        if namespace is not None:
            return []
        return [
            pod
            for status in self._registry.sidecars()
            if status.connected
            for pod in self.pods(status)
            if pod.service == service
        ]

    def render(self, target: str, faults: Sequence[FaultAssignment]) -> Resources:
        """The NetworkFaults the pod would carry (switched-on faults only); AgentRefusal
        for a fault it cannot carry."""
        pod = self.pod(target)
        split = split_target(target)
        if pod is None or split is None:
            raise AgentRefusal(f"{target} is not a pod of a connected agent")
        messages = {}
        for assignment in faults:
            spec = assignment.fault.kind
            if not isinstance(spec, NetworkFaultSpec):
                raise AgentRefusal(
                    f"an agent pod takes only kernel faults (fault.layer: kernel), not "
                    f"{type(spec).__name__.lower()}"
                )
            refusal = pod.refusal(spec)
            if refusal:
                raise AgentRefusal(refusal)
            if assignment.enabled:
                message = network_fault(pod.name, assignment.injection_id, spec)
                messages[f"{pod.name}/{assignment.injection_id}"] = message
        return {types.NETWORK_FAULT: messages}

    def set_faults(
        self, target: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]:
        """Make `faults` the pod's; every type's generation is the agent's NETWORK_FAULT
        one (the lifecycle waits on the arm and runtime types; for an agent both mean
        "its kernel holds this set")."""
        split = split_target(target)
        assert split is not None, target
        agent, pod = split
        pods = self._faults.setdefault(agent, {})
        if faults:
            pods[pod] = (tuple(faults), lease_until)
        else:
            pods.pop(pod, None)
        enabled = [until for held, until in pods.values() if any(f.enabled for f in held)]
        leases = [until for until in enabled if until is not None]
        generations = self._cache.set_resources(
            agent,
            {types.NETWORK_FAULT: self._resources(agent)},
            ttl_seconds={types.NETWORK_FAULT: self.deadman_ttl} if enabled else None,
            lease_until=min(leases, default=None) if enabled else None,
        )
        generation = generations[types.NETWORK_FAULT]
        return {t: generation for t in (*types.SEND_ORDER, types.NETWORK_FAULT)}

    def _resources(self, agent: str) -> dict[str, kernel_pb2.NetworkFault]:
        """The agent's desired set: every pod's switched-on faults (rendered without the
        capability check: what admission let through is what it is sent)."""
        out = {}
        for pod, (faults, _) in sorted(self._faults.get(agent, {}).items()):
            for assignment in faults:
                spec = assignment.fault.kind
                if assignment.enabled and isinstance(spec, NetworkFaultSpec):
                    message = network_fault(pod, assignment.injection_id, spec)
                    out[f"{pod}/{assignment.injection_id}"] = message
        return out

    def holds(self, agent: str) -> bool:
        """Whether any pod of the agent carries a fault (its record must not be forgotten)."""
        return bool(self._faults.get(agent))

    def is_connected(self, target: str) -> bool:
        split = split_target(target)
        status = self._registry.get(split[0]) if split else None
        return status is not None and status.connected

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """One wait per agent, for its current generation (its desired set is cumulative:
        the latest carries every pod's change), answered to each of its pods."""
        agents: dict[str, int] = {}
        for target, _ in waits:
            agent = split_target(target)[0]  # type: ignore[index]
            snapshot = (self._cache.get(agent) or {}).get(types.NETWORK_FAULT)
            agents[agent] = snapshot.generation if snapshot else 0
        answers = await self._registry.wait_many(list(agents.items()), types.NETWORK_FAULT, timeout)
        by_agent = dict(zip(agents, answers, strict=True))
        return [by_agent[split_target(target)[0]] for target, _ in waits]  # type: ignore[index]

    def stats_address(self, target: str) -> str | None:
        """Where the pod's app serves its metrics in Envoy's form (the guard's envoy SLO
        source reads it as a sidecar's), if its agent says."""
        pod = self.pod(target)
        return pod.stats_address if pod else None

    def identity(self, target: str) -> Identity:
        pod = self.pod(target)
        if pod is None:
            return Identity("", {}, None, target)
        return Identity(pod.service, pod.labels, None, pod.name)


def network_fault(pod: str, fault_id: str, spec: NetworkFaultSpec) -> kernel_pb2.NetworkFault:
    """The agent's resource for one pod's fault."""
    kind = spec.spec
    return kernel_pb2.NetworkFault(
        pod=pod,
        id=fault_id,
        kind=kind_of(kind).name,
        direction=spec.direction.value,
        cidr=str(spec.cidr) if spec.cidr else "",
        port=spec.port or 0,
        percentage=getattr(kind, "percentage", 0.0),
        kbps=getattr(kind, "kbps", 0),
        delay_ms=getattr(kind, "delay_ms", 0),
    )


def nft_commands(target: str, resources: Resources) -> list[str]:
    """The exact nftables commands the pod's agent runs for `resources` (a plan): one
    transaction, shown one command per entry."""
    split = split_target(target)
    assert split is not None, target
    table = ruleset.table_name(split[0])
    faults = [
        parse_fault({**_fields(message), "pod": split[1]})
        for message in resources.get(types.NETWORK_FAULT, {}).values()
    ]
    return [f"flush table {ruleset.FAMILY} {table}", *ruleset.pod_rules(table, faults)]


def _fields(message: kernel_pb2.NetworkFault) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
