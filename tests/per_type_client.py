"""Raw clients of the per-type xDS services (RTDS, ECDS), opened as Envoy opens them:
every stream of one sidecar on one connection, one ECDS stream per fault slot.

A test speaks exactly what it says on each stream (the requests of `RawAdsClient`) and
reads what the server sends back.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.extension.v3 import config_discovery_pb2_grpc
from envoy.service.runtime.v3 import rtds_pb2_grpc

from faultplane.render.ecds import DIRECTIONS, Direction, slot_name
from faultplane.render.resources import RUNTIME_LAYER
from faultplane.xds import types
from tests.ads_client import RawAdsClient

# A channel with a subchannel pool of its own gets its own TCP connection: two
# `SidecarConnection`s are two peers to the server, as two Envoys are. (By default, gRPC
# shares one connection between channels of a process with the same target and options.)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class PerTypeClient(RawAdsClient):
    """One stream of the RTDS or the ECDS service."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, type_url: str) -> None:
        self.type_url = type_url  # read by `_open`, which the base constructor calls
        super().__init__("", node_id, channel=channel)

    def _open(self, channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:
        if self.type_url == types.RUNTIME:
            return rtds_pb2_grpc.RuntimeDiscoveryServiceStub(channel).StreamRuntime()
        stub = config_discovery_pb2_grpc.ExtensionConfigDiscoveryServiceStub(channel)
        return stub.StreamExtensionConfigs()

    async def subscribe(self, *names: str) -> discovery_pb2.DiscoveryResponse:
        """Envoy's first request on the stream; returns the server's answer."""
        await self.request(self.type_url, names)
        return await self.recv()


class SidecarConnection:
    """One sidecar's connection to the server, on which it opens its per-type streams."""

    def __init__(self, address: str, node_id: str) -> None:
        self.node_id = node_id
        self._channel = grpc.aio.insecure_channel(address, options=OWN_CONNECTION)
        self._streams: list[PerTypeClient] = []

    def runtime(self) -> PerTypeClient:
        return self._stream(types.RUNTIME)

    def slot(self) -> PerTypeClient:
        """A new ECDS stream (for one slot: the names are in its first request)."""
        return self._stream(types.EXTENSION_CONFIG)

    def _stream(self, type_url: str) -> PerTypeClient:
        stream = PerTypeClient(self._channel, self.node_id, type_url)
        self._streams.append(stream)
        return stream

    async def close(self) -> None:
        """Ends every stream, then the connection."""
        for stream in self._streams:
            await stream.close()
        await self._channel.close()


def overlay_bootstrap(
    node_id: str,
    xds_port: int,
    backend: int,
    ports: dict[str, int],
    slots: int,
    fetch_timeout: float,
) -> dict[str, Any]:
    """An overlay sidecar's bootstrap: static listeners `inbound` and `outbound` (ports
    from `ports`, with `admin`) routing everything to the `backend` port, each HCM with
    its `slots` fault slots before the router, and the `faultplane` runtime layer; slots
    and layer from one config source (Envoy opens 1 + 2 * slots streams)."""
    source = {
        "resource_api_version": "V3",
        "initial_fetch_timeout": f"{fetch_timeout:g}s",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": "faultplane_xds"}}],
        },
    }
    fault = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

    def slot(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "config_discovery": {
                "config_source": source,
                "default_config": {"@type": fault},
                "apply_default_config_without_warming": True,
                "type_urls": [fault],
            },
        }

    def listener(direction: Direction) -> dict[str, Any]:
        names = [slot_name(direction, i) for i in range(slots)]
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": direction,
            "route_config": {
                "virtual_hosts": [
                    {"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}
                    ]}
                ]
            },
            "http_filters": [
                *(slot(name) for name in names),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": router},
                },
            ],
        }  # fmt: skip
        return {
            "name": direction,
            "address": _address(ports[direction]),
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                              "typed_config": hcm}]}
            ],
        }  # fmt: skip

    http2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return {
        "node": {"id": node_id, "cluster": "payments-api"},
        "admin": {"address": _address(ports["admin"])},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {
                    "name": RUNTIME_LAYER,
                    "rtds_layer": {"name": RUNTIME_LAYER, "rtds_config": source},
                },
            ]
        },
        "static_resources": {
            "listeners": [listener(direction) for direction in DIRECTIONS],
            "clusters": [
                _cluster("faultplane_xds", xds_port, typed_extension_protocol_options=http2),
                _cluster("backend", backend),
            ],
        },
    }


def _cluster(name: str, port: int, **extra: Any) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": _address(port)}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
        **extra,
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}
