"""OverlaySource: the overlay fault plane over a real SnapshotCache and SidecarRegistry.

No Envoy: fake sidecars open the registry's streams as Envoy does in overlay mode (one
RTDS stream, one ECDS stream per fault slot, all from one connection) and answer the way
Envoy would. What Envoy itself does with the resources is pinned by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import struct_pb2

from faultplane.delivery.overlay import OverlaySource
from faultplane.delivery.plane import Delivery
from faultplane.delivery.source import MeshSource
from faultplane.faults.abort import Abort
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import FaultSpec, Scope
from faultplane.render.ecds import slot_name
from faultplane.render.faults import FaultAssignment
from faultplane.render.resources import RUNTIME_LAYER, SidecarLayout
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.stream import Sent
from tests.conftest import MESH_FILE

SLOTS = 2
TTL = 10.0
FRAUD = "outbound|8080||fraud-scoring.payments.svc.cluster.local"
ECDS, RTDS = types.EXTENSION_CONFIG, types.RUNTIME
EVERY_SLOT = frozenset(slot_name(d, i) for d in ("inbound", "outbound") for i in range(SLOTS))
_ports = itertools.count(40000)


def istio_node(node_id: str, app: str, namespace: str, **labels: str) -> base_pb2.Node:
    return node(node_id, f"{app}.{namespace}", {
        "LABELS": {"app": app, **labels}, "NAMESPACE": namespace, "NAME": node_id,
        "INSTANCE_IPS": "10.0.0.7",
    })  # fmt: skip


def node(node_id: str, cluster: str, metadata: dict[str, Any]) -> base_pb2.Node:
    built = base_pb2.Node(id=node_id, cluster=cluster, metadata=struct_pb2.Struct())
    built.metadata.update(metadata)
    return built


class FakeEnvoy:
    """One sidecar's streams in the registry, from one connection, as Envoy opens them in
    overlay mode: RTDS for the `faultplane` layer, one ECDS stream per declared slot."""

    def __init__(self, registry: SidecarRegistry, node: base_pb2.Node) -> None:
        self.registry, self.node = registry, node
        self.peer = f"ipv4:127.0.0.1:{next(_ports)}"
        self.streams: dict[int, tuple[str, str]] = {}  # key -> (type, resource name)

    def open(self, type_url: str, name: str) -> None:
        key = self.registry.connected(self.node, self.peer, type_url)
        self.registry.subscribed(self.node.id, type_url, frozenset({name}), key)
        self.streams[key] = (type_url, name)

    def start(self, slots: frozenset[str] = EVERY_SLOT, rtds: bool = True) -> FakeEnvoy:
        if rtds:
            self.open(RTDS, RUNTIME_LAYER)
        for slot in sorted(slots):
            self.open(ECDS, slot)
        return self

    def stop(self) -> None:
        for key in list(self.streams):
            self.registry.disconnected(self.node.id, key)
            del self.streams[key]

    def ack(self, type_url: str, generation: int) -> None:
        """Every open stream of `type_url` was sent `generation` and ACKed it."""
        for key, (served, name) in self.streams.items():
            if served == type_url:
                sent = Sent(str(generation), f"v-{generation}", generation, frozenset({name}), 0.0)
                self.registry.record_sent(self.node.id, type_url, sent, key)
                self.registry.record_ack(self.node.id, type_url, sent, 0.0, key)


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def registry() -> SidecarRegistry:
    return SidecarRegistry()


@pytest.fixture
def source(cache: SnapshotCache, registry: SidecarRegistry) -> OverlaySource:
    return OverlaySource(cache, registry, fault_slots=SLOTS, deadman_ttl=TTL, missing_wait=0.0)


def fault(injection_id: str, upstream: str | None = None, enabled: bool = False) -> FaultAssignment:
    spec = FaultSpec(Abort(http_status=503), percentage=50)
    return FaultAssignment(injection_id, spec, Scope(upstream), enabled)


def slot_config(cache: SnapshotCache, node_id: str, slot: str) -> fault_pb2.HTTPFault:
    snapshot = cache.get(node_id)
    assert snapshot is not None
    extension = extension_pb2.TypedExtensionConfig()
    assert snapshot[ECDS].resources[slot].Unpack(extension)
    config = fault_pb2.HTTPFault()
    assert extension.typed_config.Unpack(config)
    return config


def test_a_new_sidecar_gets_every_slot_empty_and_the_empty_layer_at_once(
    source: OverlaySource, cache: SnapshotCache
) -> None:
    source.ensure(istio_node("pay-1", "payments-api", "payments"))
    snapshot = cache.get("pay-1")
    assert snapshot is not None
    assert set(snapshot[ECDS].resources) == EVERY_SLOT
    for slot in EVERY_SLOT:
        assert slot_config(cache, "pay-1", slot) == fault_pb2.HTTPFault()
    assert set(snapshot[RTDS].resources) == {RUNTIME_LAYER}
    assert snapshot[RTDS].ttl_seconds is None  # idle: nothing leased


def test_ensure_on_reconnect_keeps_the_faults_already_set(
    source: OverlaySource, cache: SnapshotCache
) -> None:
    sidecar = istio_node("pay-1", "payments-api", "payments")
    source.ensure(sidecar)
    source.set_faults("pay-1", [fault("inj1")], None)
    source.ensure(sidecar)
    assert slot_config(cache, "pay-1", "faultplane.inbound.0").abort.http_status == 503


def test_candidates_are_connected_sidecars_of_the_service_by_their_identity(
    source: OverlaySource, registry: SidecarRegistry
) -> None:
    FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments", shard="a")).start()
    FakeEnvoy(registry, istio_node("pay-2", "payments-api", "staging", shard="b")).start()
    plain = node("pay-3", "payments-api", {"labels": {"shard": "c"}, "namespace": "payments"})
    FakeEnvoy(registry, plain).start()
    FakeEnvoy(registry, istio_node("led-1", "ledger", "payments")).start()
    gone = FakeEnvoy(registry, istio_node("pay-4", "payments-api", "payments")).start()
    gone.stop()

    found = {c.node_id: c for c in source.candidates("payments-api")}
    assert set(found) == {"pay-1", "pay-2", "pay-3"}
    # Selectors see the identity's labels: Istio's LABELS for an Istio-shaped node.
    assert found["pay-1"].labels == {"app": "payments-api", "shard": "a"}
    assert found["pay-3"].labels == {"shard": "c"}
    in_payments = [c.node_id for c in source.candidates("payments-api", namespace="payments")]
    assert in_payments == ["pay-1", "pay-3"]
    assert source.candidates("payments-api", namespace="nowhere") == []


def test_labels_are_those_of_the_latest_connection(
    source: OverlaySource, registry: SidecarRegistry
) -> None:
    first = FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments", shard="a"))
    first.start()
    assert source.candidates("payments-api")[0].labels["shard"] == "a"
    first.stop()
    FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments", shard="z")).start()
    assert source.candidates("payments-api")[0].labels["shard"] == "z"


def test_stats_address_from_metadata(source: OverlaySource, registry: SidecarRegistry) -> None:
    FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments")).start()
    plain = node("pay-2", "payments-api", {"stats_address": "127.0.0.1:19001"})
    FakeEnvoy(registry, plain).start()
    assert source.stats_address("pay-1") == "10.0.0.7:15090"
    assert source.stats_address("pay-2") == "127.0.0.1:19001"
    assert source.stats_address("never-seen") is None


def test_switched_on_faults_lease_the_runtime_layer_only(
    source: OverlaySource, cache: SnapshotCache
) -> None:
    until = time.monotonic() + 30
    armed = source.set_faults("pay-1", [fault("inj1", FRAUD)], None)
    snapshot = cache.get("pay-1")
    assert snapshot is not None and snapshot[RTDS].ttl_seconds is None
    on = source.set_faults("pay-1", [fault("inj1", FRAUD, enabled=True)], until)
    snapshot = cache.get("pay-1")
    assert snapshot is not None
    assert (snapshot[RTDS].ttl_seconds, snapshot[RTDS].lease_until) == (TTL, until)
    assert (snapshot[ECDS].ttl_seconds, snapshot[ECDS].lease_until) == (None, None)
    # Switching on changes only the layer: the slot's version stays, no ECDS resend.
    assert on[ECDS] == armed[ECDS] and on[RTDS] > armed[RTDS]
    assert slot_config(cache, "pay-1", "faultplane.outbound.0").upstream_cluster == FRAUD


def test_one_rendering_serves_every_sidecar_with_the_same_faults(
    source: OverlaySource, cache: SnapshotCache
) -> None:
    faults = [fault("inj1"), fault("inj2", FRAUD)]
    assert source.render("pay-1", faults) is source.render("pay-2", list(faults))
    source.set_faults("pay-1", faults, None)
    source.set_faults("pay-2", faults, None)
    one, two = cache.get("pay-1"), cache.get("pay-2")
    assert one is not None and two is not None
    for slot in EVERY_SLOT:
        assert one[ECDS].resources[slot] is two[ECDS].resources[slot]  # packed once


async def test_a_sidecar_without_the_slot_answers_like_a_nack_naming_it(
    source: OverlaySource, registry: SidecarRegistry
) -> None:
    envoy = FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments"))
    envoy.start(slots=frozenset({"faultplane.inbound.0", "faultplane.inbound.1"}))
    generation = source.set_faults("pay-1", [fault("inj1", FRAUD)], None)
    outcome = await source.wait_for("pay-1", ECDS, generation[ECDS], timeout=5)
    assert not outcome.acked
    assert outcome.error == (
        "sidecar pay-1 has no fault slot faultplane.outbound.0 "
        "(no ECDS subscription for it; see `faultplane overlay envoy`)"
    )
    # The layer has its stream: an RTDS wait is answered by that stream alone.
    envoy.ack(RTDS, generation[RTDS])
    assert (await source.wait_for("pay-1", RTDS, generation[RTDS], timeout=5)).acked


async def test_a_sidecar_without_the_rtds_layer_answers_like_a_nack(
    source: OverlaySource, registry: SidecarRegistry
) -> None:
    FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments")).start(rtds=False)
    generation = source.set_faults("pay-1", [fault("inj1")], None)
    for type_url in (ECDS, RTDS):
        outcome = await source.wait_for("pay-1", type_url, generation[type_url], timeout=5)
        assert not outcome.acked
        assert "sidecar pay-1 has no RTDS subscription to the runtime layer 'faultplane'" in (
            outcome.error
        )


async def test_a_sidecar_with_its_slots_is_waited_for_on_every_slot_stream(
    source: OverlaySource, registry: SidecarRegistry
) -> None:
    envoy = FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments")).start()
    generation = source.set_faults("pay-1", [fault("inj1"), fault("inj2", FRAUD)], None)[ECDS]
    envoy.ack(ECDS, generation)
    outcome = await source.wait_for("pay-1", ECDS, generation, timeout=5)
    assert outcome.acked and outcome.version == f"v-{generation}"


async def test_a_slot_stream_opening_while_waiting_is_waited_for(
    cache: SnapshotCache, registry: SidecarRegistry
) -> None:
    grace = 0.5
    source = OverlaySource(cache, registry, SLOTS, TTL, missing_wait=grace)
    envoy = FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments"))
    envoy.start(slots=frozenset({"faultplane.inbound.0"}))
    generation = source.set_faults("pay-1", [fault("inj1", FRAUD)], None)[ECDS]

    def listener_arrives() -> None:
        # The other control plane's outbound listener comes up: its slot stream opens.
        envoy.open(ECDS, "faultplane.outbound.0")
        envoy.ack(ECDS, generation)

    # Fires within the grace whatever the load: the loop runs timers in deadline order.
    asyncio.get_running_loop().call_later(grace / 10, listener_arrives)
    outcome = await source.wait_for("pay-1", ECDS, generation, timeout=5)
    assert outcome.acked


async def test_the_wait_ends_in_a_nack_when_the_slot_never_comes(
    cache: SnapshotCache, registry: SidecarRegistry
) -> None:
    grace = 0.3
    source = OverlaySource(cache, registry, SLOTS, TTL, missing_wait=grace)
    FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments")).start(frozenset())
    generation = source.set_faults("pay-1", [fault("inj1")], None)[ECDS]
    started = time.monotonic()
    outcome = await source.wait_for("pay-1", ECDS, generation, timeout=5)
    assert time.monotonic() - started >= grace * 0.9
    assert not outcome.acked and "faultplane.inbound.0" in outcome.error


async def test_delivery_fails_the_push_on_the_sidecar_lacking_the_slot_only(
    source: OverlaySource, cache: SnapshotCache, registry: SidecarRegistry
) -> None:
    complete = FakeEnvoy(registry, istio_node("pay-1", "payments-api", "payments")).start()
    partial = FakeEnvoy(registry, istio_node("pay-2", "payments-api", "payments"))
    partial.start(slots=frozenset({"faultplane.inbound.0"}))

    def answer() -> None:  # as its streams would: every change sent and ACKed
        snapshot = cache.get("pay-1")
        assert snapshot is not None
        complete.ack(ECDS, snapshot[ECDS].generation)

    cache.watch("pay-1", answer)
    delivery = Delivery(source, ack_timeout=5)
    armed = fault("inj1", FRAUD)
    evidence = {e.sidecar: e for e in await delivery.push(["pay-1", "pay-2"], "inj1", armed, ECDS)}
    assert evidence["pay-1"].outcome == "acked"
    assert evidence["pay-2"].outcome == "nacked"
    assert "sidecar pay-2 has no fault slot faultplane.outbound.0" in evidence["pay-2"].error


def test_mesh_source_stats_address_and_namespace() -> None:
    mesh = load_mesh(MESH_FILE)
    registry = SidecarRegistry()
    source = MeshSource(mesh, SnapshotCache(), registry, SidecarLayout(), TTL)
    registry.connected(node("payments-api-1", "payments-api", {"admin_port": 19013}))
    registry.connected(node("payments-api-2", "payments-api", {"admin_port": "garbage"}))
    assert source.stats_address("payments-api-1") == "127.0.0.1:19013"
    with pytest.raises(ValueError, match="admin_port"):
        source.stats_address("payments-api-2")
    assert source.stats_address("never-seen") is None
    assert len(source.candidates("payments-api")) == 2
    # Mesh pods name no namespace: a namespace selects none of them.
    assert source.candidates("payments-api", namespace="payments") == []


def test_departed_sidecars_carrying_no_fault_are_forgotten(
    source: OverlaySource, cache: SnapshotCache, registry: SidecarRegistry
) -> None:
    """Pods come and go, each with a new node id: what the server keeps of one that left
    (its record, desired state, identity) goes once it has been gone long enough, unless
    a fault is still meant for it (it may come back to carry it)."""
    delivery = Delivery(source, ack_timeout=5)
    gone, faulted, here = (istio_node(n, "payments-api", "payments") for n in ("a", "b", "c"))
    envoys = {}
    for sidecar in (gone, faulted, here):
        source.ensure(sidecar)
        envoys[sidecar.id] = FakeEnvoy(registry, sidecar).start()
        assert source.candidates("payments-api")  # its identity is known
    delivery.reserve(["b"], "inj1", fault("inj1"))
    envoys["a"].stop()
    envoys["b"].stop()

    assert delivery.forget_departed(before=time.time() - 60) == 0  # not gone long enough
    assert delivery.forget_departed(before=time.time() + 1) == 1

    assert registry.get("a") is None and not cache.has("a")
    assert registry.get("b") is not None and cache.has("b")  # a fault is reserved for it
    assert registry.get("c") is not None and cache.has("c")  # still connected
    # A forgotten sidecar that comes back is served from scratch.
    source.ensure(gone)
    FakeEnvoy(registry, gone).start()
    assert [s.node_id for s in source.candidates("payments-api")] == ["a", "c"]
