"""Base resources of one sidecar: a pure function of the mesh model and the pod.

Every HCM carries `fault_slots` no-op fault filters from the start, so that injecting a
fault later only changes RDS and RTDS, never LDS (LDS changes reach new connections only).

The same listeners, routes and clusters also serve the overlay demo (`overlay_base_resources`),
where another control plane owns them and the fault filters are ECDS slots fetched from
faultplane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from faultplane.model.mesh import Mesh, Pod
from faultplane.xds import types

INGRESS = "ingress"
EGRESS = "egress"
LOCAL_APP_CLUSTER = "local-app"
RUNTIME_LAYER = "faultplane"
DEFAULT_FAULT_SLOTS = 4
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=1)
# The mark a partition's group puts on its requests to the upstream, for the upstream's
# inbound to refuse (faultplane.faults.partition). Every egress route strips it first, so
# an app cannot forge it through its sidecar.
PARTITION_HEADER = "x-faultplane-partition"

# type_url -> resource name -> resource message
Resources = dict[str, dict[str, Message]]


def fault_slot_name(index: int) -> str:
    return f"faultplane.fault.{index}"


@dataclass(frozen=True)
class SidecarLayout:
    """What a sidecar's listeners look like: enough to render faults onto its routes."""

    fault_slots: int = DEFAULT_FAULT_SLOTS


def sidecar_resources(mesh: Mesh, pod: Pod, layout: SidecarLayout = SidecarLayout()) -> Resources:
    """Clusters, endpoints, listeners, routes and the runtime layer one pod's sidecar needs."""
    slots = _inline_fault_slots(layout.fault_slots)
    return {
        **_mesh_resources(mesh, pod, {INGRESS: slots, EGRESS: slots}),
        types.RUNTIME: {RUNTIME_LAYER: rtds_pb2.Runtime(name=RUNTIME_LAYER)},
    }


def overlay_base_resources(mesh: Mesh, pod: Pod, slots: int) -> Resources:
    """What another control plane serves one pod's sidecar in the overlay demo (the demo's
    base server, standing in for istiod): the clusters, endpoints, listeners and routes of
    `sidecar_resources`, but no runtime layer and no fault on any route.

    Each HCM's fault filters are the overlay's ECDS slots exactly as `faultplane overlay
    envoy` prints them (`faultplane.inbound.<i>` on ingress, `faultplane.outbound.<i>` on
    egress; default `HTTPFault{}`, applied without warming; config source the bootstrap's
    `faultplane_xds` cluster). The egress clusters are named after the dependency, as the
    sidecar calls it, so a fault's `target.upstream: fraud-scoring` matches one exactly.
    """
    # Imported here, not above: render.overlay_config builds on this module (RUNTIME_LAYER).
    from faultplane.render.ecds import INBOUND, OUTBOUND
    from faultplane.render.overlay_config import slot_filter, slot_names

    filters = {
        listener: [
            json_format.ParseDict(slot_filter(name), hcm_pb2.HttpFilter())
            for name in slot_names(direction, slots)
        ]
        for listener, direction in ((INGRESS, INBOUND), (EGRESS, OUTBOUND))
    }
    return _mesh_resources(mesh, pod, filters)


def _mesh_resources(
    mesh: Mesh, pod: Pod, fault_filters: Mapping[str, Sequence[hcm_pb2.HttpFilter]]
) -> Resources:
    """The pod's clusters, endpoints, listeners and routes, with `fault_filters[listener]`
    before the router of each listener's HCM."""
    service = mesh.services[pod.service]
    clusters: dict[str, Message] = {LOCAL_APP_CLUSTER: _static_cluster(LOCAL_APP_CLUSTER, pod)}
    endpoints: dict[str, Message] = {}
    for dep in service.dependencies:
        clusters[dep] = _eds_cluster(dep)
        endpoints[dep] = _load_assignment(dep, mesh.services[dep].pods)
    listeners = {
        name: _listener(name, pod.address, port, fault_filters[name])
        for name, port in ((INGRESS, pod.ports.ingress), (EGRESS, pod.ports.egress))
    }
    routes = {
        INGRESS: _ingress_routes(),
        EGRESS: _egress_routes(service.dependencies),
    }
    return {
        types.CLUSTER: clusters,
        types.ENDPOINT: endpoints,
        types.LISTENER: listeners,
        types.ROUTE: routes,
    }


def empty_resources() -> Resources:
    """What an unknown sidecar gets: nothing, so it initialises and stays inert."""
    return {type_url: {} for type_url in types.PUSH_ORDER}


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def _lb_endpoint(address: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_socket_address(address, port))
    )


def _static_cluster(name: str, pod: Pod) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=CONNECT_TIMEOUT,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[_lb_endpoint(pod.address, pod.ports.app)]
                )
            ],
        ),
    )


def _eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=CONNECT_TIMEOUT,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
    )


def _load_assignment(cluster: str, pods: tuple[Pod, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[_lb_endpoint(pod.address, pod.ports.ingress) for pod in pods]
            )
        ],
    )


def _inline_fault_slots(count: int) -> list[hcm_pb2.HttpFilter]:
    """`count` idle fault filters (`HTTPFault{}`), armed later by per-route config."""
    slots = [hcm_pb2.HttpFilter(name=fault_slot_name(i)) for i in range(count)]
    for slot in slots:
        slot.typed_config.Pack(fault_pb2.HTTPFault())
    return slots


def _listener(
    name: str, address: str, port: int, fault_filters: Sequence[hcm_pb2.HttpFilter]
) -> listener_pb2.Listener:
    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=name),
        http_filters=[*fault_filters, router],
    )
    network_filter = listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager"
    )
    network_filter.typed_config.Pack(hcm)
    return listener_pb2.Listener(
        name=name,
        address=_socket_address(address, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[network_filter])],
    )


def _route_to(cluster: str, strip: Sequence[str] = ()) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        name=cluster,
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster),
        request_headers_to_remove=strip,
    )


def _ingress_routes() -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=INGRESS,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="inbound", domains=["*"], routes=[_route_to(LOCAL_APP_CLUSTER)]
            )
        ],
    )


def _egress_routes(dependencies: tuple[str, ...]) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=EGRESS,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=dep, domains=[dep, f"{dep}:*"], routes=[_route_to(dep, [PARTITION_HEADER])]
            )
            for dep in dependencies
        ],
    )
