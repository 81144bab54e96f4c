"""The ADS protocol, checked with a raw client that counts every response it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import any_pb2, struct_pb2

from faultplane.model.mesh import Mesh
from faultplane.render.resources import sidecar_resources
from faultplane.server.control import ControlServer
from faultplane.xds import types
from tests.ads_client import RawAdsClient
from tests.helpers import until

NODE = "payments-api-1"
ROUTES = ("egress", "ingress")
ENDPOINTS = ("fraud-scoring", "ledger")


@pytest.fixture
async def client(control: ControlServer) -> AsyncIterator[RawAdsClient]:
    raw = RawAdsClient(f"127.0.0.1:{control.xds_port}", NODE, "payments-api")
    try:
        yield raw
    finally:
        await raw.close()


def changed_everything(mesh: Mesh, marker: str) -> dict:
    """The pod's resources with one visible change in every type."""
    resources = sidecar_resources(mesh, mesh.pod(NODE))
    resources[types.CLUSTER]["local-app"].alt_stat_name = marker
    resources[types.ENDPOINT]["ledger"].endpoints[0].priority = 0
    resources[types.ENDPOINT]["ledger"].endpoints[0].load_balancing_weight.value = 7
    resources[types.LISTENER]["ingress"].stat_prefix = marker
    resources[types.ROUTE]["ingress"].virtual_hosts[
        0
    ].request_headers_to_add.add().header.key = "x-marker"
    resources[types.RUNTIME]["faultplane"] = rtds_pb2.Runtime(
        name="faultplane",
        layer=struct_pb2.Struct(fields={marker: struct_pb2.Value(number_value=1)}),
    )
    return resources


async def test_initial_responses_carry_instance_prefixed_versions_and_fresh_nonces(
    control: ControlServer, client: RawAdsClient
) -> None:
    latest = await client.subscribe_all(ROUTES, ENDPOINTS)

    nonces = [r.nonce for r in latest.values()]
    assert len(set(nonces)) == len(nonces)
    for type_url, response in latest.items():
        assert response.version_info.startswith(control.cache.instance + "-")
        assert all(any_.type_url == type_url for any_ in response.resources)
    names = {
        t: sorted(_resource_name(t, a) for a in latest[t].resources)
        for t in (types.CLUSTER, types.LISTENER, types.ROUTE)
    }
    assert names[types.CLUSTER] == ["fraud-scoring", "ledger", "local-app"]
    assert names[types.LISTENER] == ["egress", "ingress"]
    assert names[types.ROUTE] == ["egress", "ingress"]


async def test_acks_are_recorded_per_type_and_nothing_more_is_sent(
    control: ControlServer, client: RawAdsClient
) -> None:
    latest = await client.subscribe_all(ROUTES, ENDPOINTS)
    await until_acked(control, latest[types.RUNTIME])  # the last ACK: all are recorded

    sidecar = control.registry.get(NODE)
    assert sidecar is not None and sidecar.connected
    for type_url, response in latest.items():
        assert sidecar.types[type_url].acked_version == response.version_info
        assert sidecar.types[type_url].last_error == ""
        # Each ACK's pass decided what to send next before the ACK was visible here, and
        # records what it sends before sending: nothing was.
        assert sidecar.types[type_url].sent_version == response.version_info


async def test_change_of_every_type_is_pushed_in_cds_eds_lds_rds_rtds_order(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    await client.subscribe_all(ROUTES, ENDPOINTS)

    control.cache.set_resources(NODE, changed_everything(mesh, "v2"))
    pushed = [await client.recv() for _ in range(5)]

    assert [r.type_url for r in pushed] == list(types.PUSH_ORDER)


async def test_identical_resources_are_not_sent_again(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    await client.subscribe_all(ROUTES, ENDPOINTS)

    control.cache.set_resources(NODE, sidecar_resources(mesh, mesh.pod(NODE)))

    # A real change after the identical one: had the identical state been sent, it would
    # arrive first, since a stream delivers in order.
    marked = control.cache.set_resources(NODE, changed_everything(mesh, "after"))
    first = await client.recv()
    assert first.version_info == f"{control.cache.instance}-{marked[types.CLUSTER]}"


async def test_nack_is_recorded_and_the_rejected_version_is_never_resent(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    await client.subscribe_all(ROUTES, ENDPOINTS)
    control.cache.set_resources(NODE, changed_everything(mesh, "bad"))
    cds = await client.recv()
    assert cds.type_url == types.CLUSTER

    await client.request(types.CLUSTER, (), version="", nonce=cds.nonce, error="cluster bad")
    for _ in range(4):  # the other types of the same change
        await client.ack(await client.recv(), _names_for(client.received[-1].type_url))
    await until_acked(control, client.received[-1])  # the NACK, sent before, is in too

    status = control.registry.get(NODE).types[types.CLUSTER]
    assert status.nacked_version == cds.version_info
    assert status.last_error == "cluster bad"
    assert status.acked_version != cds.version_info

    # A new desired state is sent: NACK blocks only the rejected content. It is the next
    # response: a re-send of the rejected version would have come before it.
    control.cache.set_resources(NODE, changed_everything(mesh, "good"))
    fixed = await client.recv()
    assert fixed.type_url == types.CLUSTER and fixed.version_info != cds.version_info
    sent_cds = [r for r in client.received if r.type_url == types.CLUSTER]
    assert [r.version_info for r in sent_cds].count(cds.version_info) == 1


async def test_stale_nonce_acknowledges_nothing_but_updates_the_subscription(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    latest = await client.subscribe_all(ROUTES, ENDPOINTS)
    first_rds = latest[types.ROUTE]
    control.cache.set_resources(NODE, changed_everything(mesh, "v2"))
    pushed = {r.type_url: r for r in [await client.recv() for _ in range(5)]}
    new_rds = pushed[types.ROUTE]

    # A request carrying the superseded nonce, narrowing the subscription to "ingress".
    await client.request(types.ROUTE, ("ingress",), first_rds.version_info, first_rds.nonce)
    # Requests are handled in order: once the CDS ACK sent after it is recorded, so is it.
    await client.ack(pushed[types.CLUSTER])
    await until_acked(control, pushed[types.CLUSTER])
    assert control.registry.get(NODE).types[types.ROUTE].acked_version == first_rds.version_info

    # ACK of the in-flight response: now the narrower subscription is served.
    await client.ack(new_rds, ("ingress",))
    narrowed = await client.recv()
    assert narrowed.type_url == types.ROUTE
    assert [_resource_name(types.ROUTE, a) for a in narrowed.resources] == ["ingress"]
    assert control.registry.get(NODE).types[types.ROUTE].acked_version == new_rds.version_info


async def test_requested_but_missing_name_is_sent_once_it_exists(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    wanted = (*ROUTES, "later")
    await client.request(types.ROUTE, wanted)
    first = await client.recv()
    assert sorted(_resource_name(types.ROUTE, a) for a in first.resources) == list(ROUTES)
    await client.ack(first, wanted)
    await until_acked(control, first)

    resources = sidecar_resources(mesh, mesh.pod(NODE))
    resources[types.ROUTE]["later"] = route_pb2.RouteConfiguration(name="later")
    control.cache.set_resources(NODE, resources)

    update = await client.recv()
    assert "later" in {_resource_name(types.ROUTE, a) for a in update.resources}


async def test_reconnect_with_a_remembered_version_gets_the_full_state(
    control: ControlServer,
) -> None:
    first = RawAdsClient(f"127.0.0.1:{control.xds_port}", NODE)
    latest = await first.subscribe_all(ROUTES, ENDPOINTS)
    await first.close()

    second = RawAdsClient(f"127.0.0.1:{control.xds_port}", NODE)
    try:
        cds = latest[types.CLUSTER]
        await second.request(types.CLUSTER, (), version=cds.version_info, nonce="")
        again = await second.recv()
        assert len(again.resources) == len(cds.resources)
    finally:
        await second.close()


async def test_removal_waits_until_the_other_types_have_converged(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    await client.subscribe_all(ROUTES, ENDPOINTS)
    resources = sidecar_resources(mesh, mesh.pod(NODE))
    del resources[types.CLUSTER]["ledger"]
    resources[types.ROUTE]["egress"].virtual_hosts.pop()  # stop routing to ledger
    control.cache.set_resources(NODE, resources)

    keep = await client.recv()
    assert keep.type_url == types.CLUSTER
    assert "ledger" in {_resource_name(types.CLUSTER, a) for a in keep.resources}
    await client.ack(keep)
    routes = await client.recv()
    assert routes.type_url == types.ROUTE
    await client.ack(routes, ROUTES)

    final = await client.recv()
    assert final.type_url == types.CLUSTER
    assert "ledger" not in {_resource_name(types.CLUSTER, a) for a in final.resources}


async def test_leased_resources_are_resent_in_full_before_their_ttl(
    control: ControlServer, client: RawAdsClient, mesh: Mesh
) -> None:
    await client.subscribe_all(ROUTES, ENDPOINTS)
    resources = {types.RUNTIME: changed_everything(mesh, "lease")[types.RUNTIME]}
    control.cache.set_resources(NODE, resources, ttl_seconds={types.RUNTIME: 1.0})

    leased = await client.recv()
    await client.ack(leased, ("faultplane",))
    started = asyncio.get_running_loop().time()
    again = await client.recv(timeout=2.0)
    waited = asyncio.get_running_loop().time() - started

    assert again.type_url == types.RUNTIME and again.version_info == leased.version_info
    assert waited < 1.0  # re-sent before the lease could run out
    wrapper = discovery_pb2.Resource()
    again.resources[0].Unpack(wrapper)
    assert wrapper.ttl.ToMilliseconds() == 1000 and wrapper.name == "faultplane"
    runtime = rtds_pb2.Runtime()
    wrapper.resource.Unpack(runtime)
    assert runtime.layer.fields["lease"].number_value == 1


async def test_unknown_node_gets_empty_state(control: ControlServer) -> None:
    raw = RawAdsClient(f"127.0.0.1:{control.xds_port}", "not-a-pod")
    try:
        await raw.request(types.CLUSTER)
        response = await raw.recv()
        assert list(response.resources) == []
    finally:
        await raw.close()


async def until_acked(control: ControlServer, response: discovery_pb2.DiscoveryResponse) -> None:
    """Wait until the server has recorded the sidecar's ACK of `response`."""

    def acked() -> bool:
        sidecar = control.registry.get(NODE)
        return (
            sidecar is not None
            and sidecar.status(response.type_url).acked_version == response.version_info
        )

    await until(acked, what=f"the ACK of {response.version_info}")


def _names_for(type_url: str) -> tuple[str, ...]:
    return {types.ENDPOINT: ENDPOINTS, types.ROUTE: ROUTES, types.RUNTIME: ("faultplane",)}.get(
        type_url, ()
    )


def _resource_name(type_url: str, packed: any_pb2.Any) -> str:
    message_class = {
        types.CLUSTER: cluster_pb2.Cluster,
        types.LISTENER: listener_pb2.Listener,
        types.ROUTE: route_pb2.RouteConfiguration,
    }[type_url]
    resource = message_class()
    packed.Unpack(resource)
    return resource.name
