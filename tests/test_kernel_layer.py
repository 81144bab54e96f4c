"""The kernel layer without a kernel: the request's validation at the edge, and the agent
plane's choices (targets from agents' metadata, refusals, the leased resource set)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from faultplane.agent.capabilities import Capabilities
from faultplane.agent.pods import Pod
from faultplane.agent.xds_client import node_of
from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.delivery.agents import AgentPlane, AgentRefusal, nft_commands
from faultplane.delivery.source import MeshSource
from faultplane.delivery.with_agents import PlaneWithAgents
from faultplane.faults.message import describe_fault
from faultplane.faults.registry import kind_of
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import FaultSpec, Scope
from faultplane.render.faults import FaultAssignment
from faultplane.render.resources import SidecarLayout
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from tests.conftest import MESH_FILE

MESH = load_mesh(MESH_FILE)
SLOS = {"merchant-write-success"}
BASE: dict[str, Any] = {
    "duration_seconds": 60,
    "steady_state": {"slo": "merchant-write-success", "min": 0.9, "abort_after": 5},
    "hypothesis": "the app rides out a lossy database link",
    "owner": "tests",
}


def request(fault: dict[str, Any], target: dict[str, Any] | None = None, **top: Any) -> Any:
    document = {
        "target": target or {"service": "orders-app", "max_pods": 2},
        "fault": {"layer": "kernel", **fault},
        **BASE,
        **top,
    }
    return json_format.ParseDict(document, pb.InjectionRequest())


def problems(fault: dict[str, Any], target: dict[str, Any] | None = None) -> str:
    with pytest.raises(InvalidRequest) as refused:
        validate_request(request(fault, target), MESH, SLOS)
    return str(refused.value)


def test_kernel_fault_becomes_a_network_fault_spec_on_a_service_the_mesh_does_not_know() -> None:
    spec = validate_request(
        request({"type": "packet_loss", "percentage": 30, "cidr": "10.9.0.5", "port": 5432}),
        MESH,
        SLOS,
    )
    kind = spec.fault.kind
    assert spec.fault.percentage == 30  # what approval policies read
    assert str(kind.cidr) == "10.9.0.5/32" and kind.port == 5432
    assert kind.direction.value == "egress"  # the default
    assert kind_of(kind).describe(kind) == "kernel packet_loss 30% egress to 10.9.0.5/32 port 5432"


def test_every_bad_field_is_named_at_once() -> None:
    found = problems(
        {"type": "packet_loss", "percentage": 130, "cidr": "10.0.0.300/8", "direction": "up"}
    )
    assert "fault.cidr: '10.0.0.300/8' is not an IP network" in found
    assert "fault.percentage: packet_loss needs a percentage in (0, 100], not 130" in found
    assert "fault.direction: must be egress or ingress, not 'up'" in found


def test_envoy_only_fields_are_refused_by_name() -> None:
    found = problems(
        {"type": "partition", "max_active": 3, "p50_ms": 20},
        {"service": "orders-app", "max_pods": 1, "upstream": "ledger",
         "match": {"path_prefix": "/x"}},
    )  # fmt: skip
    assert "fault.max_active: not offered on the kernel layer" in found
    assert "fault.p50_ms: not a field of a kernel partition fault" in found
    assert "target.upstream: a kernel fault names its far end with fault.cidr" in found
    assert "target.match: a kernel fault sees packets, not requests" in found


def test_unknown_layer_and_kind_are_named() -> None:
    assert "fault.layer: must be kernel or absent" in problems({"layer": "tc", "type": "reset"})
    assert "fault.type: unknown kind 'jitter'" in problems({"type": "jitter"})
    assert "fault.port: must be a port in 1-65535" in problems({"type": "reset", "port": 70000})


def test_a_multi_fault_experiment_mixes_sidecar_and_kernel_parts() -> None:
    document = {
        "faults": [
            {"target": {"service": "fraud-scoring", "max_pods": 1},
             "fault": {"type": "latency", "fixed_ms": 200}},
            {"target": {"service": "orders-app", "max_pods": 1},
             "fault": {"layer": "kernel", "type": "packet_loss", "percentage": 30,
                       "cidr": "10.9.0.5/32", "port": 5432}},
        ],
        **BASE,
    }  # fmt: skip
    spec = validate_request(json_format.ParseDict(document, pb.InjectionRequest()), MESH, SLOS)
    assert [kind_of(p.fault.kind).name for p in spec.parts] == ["latency", "kernel"]
    document["faults"][1]["fault"]["cidr"] = "nowhere"
    with pytest.raises(InvalidRequest, match=r"faults\[1\]\.fault\.cidr: 'nowhere'"):
        validate_request(json_format.ParseDict(document, pb.InjectionRequest()), MESH, SLOS)


def _plane(netem: bool = False) -> tuple[AgentPlane, SnapshotCache]:
    cache, registry = SnapshotCache(), SidecarRegistry()
    pods = [Pod("app-1", "orders-app", "ns1", {"tier": "web"}), Pod("db-1", "db", "ns2")]
    capabilities = Capabilities(netem=netem, netem_reason="Error: Specified qdisc not found.")
    registry.connected(node_of("node-a", "faultplane-agent", pods, capabilities), "peer")
    return AgentPlane(cache, registry, deadman_ttl=3.0), cache


def _kernel(fault: dict[str, Any]) -> FaultSpec:
    return validate_request(request(fault), MESH, SLOS).fault


def test_agent_pods_are_candidates_by_service_and_labels() -> None:
    plane, _ = _plane()
    (pod,) = plane.candidates("orders-app")
    assert pod.node_id == "agent/node-a/app-1" and pod.labels == {"tier": "web"}
    assert plane.candidates("orders-app", namespace="payments") == []


def test_latency_without_netem_and_sidecar_faults_are_refused_for_an_agent_pod() -> None:
    plane, _ = _plane()
    latency = FaultAssignment("i1", _kernel({"type": "latency", "fixed_ms": 50}), Scope(), True)
    with pytest.raises(AgentRefusal, match=r"latency needs the netem qdisc.*qdisc not found"):
        plane.render("agent/node-a/app-1", [latency])
    envoy = FaultAssignment("i2", FaultSpec(object()), Scope(), True)
    with pytest.raises(AgentRefusal, match="only kernel faults"):
        plane.render("agent/node-a/app-1", [envoy])
    # With netem in the kernel the agent still offers no latency (it renders nftables
    # rules only): refused as not offered, before anything reaches the agent.
    with pytest.raises(AgentRefusal, match="agent node-a does not offer latency"):
        _plane(netem=True)[0].render("agent/node-a/app-1", [latency])


def test_switched_on_faults_of_every_pod_are_one_leased_set_and_arming_changes_nothing() -> None:
    plane, cache = _plane()
    loss = _kernel({"type": "packet_loss", "percentage": 25, "cidr": "10.9.0.5/32"})
    armed = plane.set_faults(
        "agent/node-a/app-1", [FaultAssignment("i1", loss, Scope(), False)], 50.0
    )
    first = cache.get("node-a")[types.NETWORK_FAULT]
    assert first.resources == {} and first.ttl_seconds is None
    assert armed[types.ROUTE] == armed[types.RUNTIME] == first.generation
    on = FaultAssignment("i1", loss, Scope(), True)
    plane.set_faults("agent/node-a/app-1", [on], 50.0)
    plane.set_faults("agent/node-a/db-1", [FaultAssignment("i2", loss, Scope(), True)], 40.0)
    snapshot = cache.get("node-a")[types.NETWORK_FAULT]
    assert sorted(snapshot.resources) == ["app-1/i1", "db-1/i2"]
    assert snapshot.ttl_seconds == 3.0 and snapshot.lease_until == 40.0
    commands = nft_commands("agent/node-a/app-1", plane.render("agent/node-a/app-1", [on]))
    assert commands == [
        "flush table inet faultplane_node_a",
        "add rule inet faultplane_node_a egress ip daddr 10.9.0.5/32 "
        'numgen random mod 10000 < 2500 drop comment "faultplane:app-1/i1"',
    ]
    plane.set_faults("agent/node-a/app-1", [], None)
    plane.set_faults("agent/node-a/db-1", [], None)
    assert cache.get("node-a")[types.NETWORK_FAULT].resources == {}
    assert not plane.holds("node-a")


def test_kernel_faults_on_one_pod_overlap_only_on_the_same_traffic() -> None:
    db = validate_request(
        request({"type": "partition", "cidr": "10.9.0.5/32", "port": 5432}), MESH, SLOS
    )
    cache = validate_request(
        request({"type": "partition", "cidr": "10.9.0.6/32", "port": 6379}), MESH, SLOS
    )
    again = validate_request(
        request({"type": "reset", "cidr": "10.9.0.5/32", "port": 5432}), MESH, SLOS
    )
    assert db.target.scope.upstream == "kernel:egress:10.9.0.5/32:5432"
    assert db.target.scope != cache.target.scope and db.target.scope == again.target.scope


def test_a_kernel_fault_on_an_envoy_sidecar_is_refused() -> None:
    plane, cache = _plane()
    registry = SidecarRegistry()
    mesh_source = MeshSource(MESH, cache, registry, SidecarLayout(4), 3.0)
    both = PlaneWithAgents(mesh_source, plane)
    loss = FaultAssignment("i1", _kernel({"type": "packet_loss", "percentage": 5}), Scope(), True)
    with pytest.raises(AgentRefusal, match="needs a node agent's pod, and payments-api-1 is"):
        both.render("payments-api-1", [loss])


def test_tables_describe_a_kernel_fault() -> None:
    fault = pb.Fault(layer="kernel", type="reset", direction="ingress", cidr="10.9.0.0/24")
    assert describe_fault(fault) == "kernel reset ingress to 10.9.0.0/24"
