"""What a user adds to an Envoy faultplane does not own, so faultplane can fault it: pure data.

In overlay mode another control plane (or a static file) owns the sidecar's listeners,
routes and clusters; faultplane only serves fault-filter slots (ECDS) and the leased
runtime layer that switches faults on (RTDS). The sidecar's own config must therefore
declare three things, built here as Envoy v3 JSON (with "@type" where Envoy needs it):

- the static cluster `faultplane_xds` that reaches faultplane's xDS port (a config
  source's cluster must be defined in the bootstrap, never learnt over CDS);
- the RTDS layer `faultplane`, appended to `layered_runtime.layers`;
- `N` slots per direction, inserted before the router of every inbound and every
  outbound HCM.

Every slot and the layer share one byte-identical ConfigSource: Envoy keys an ECDS
subscription by the hash of its ConfigSource plus the slot name, so identical sources
make a slot name used by many HCMs one stream, and a sidecar costs 2N+1 streams on one
HTTP/2 connection whatever its number of listeners. Each choice below was measured on
Envoy 1.40 (see the README, "Attach faultplane to your mesh").

The Istio flavour carries the same pieces: an `EnvoyFilter` inserting the slots, and a
bootstrap-override ConfigMap adding the cluster and the layer (Istio rejects a config
source whose cluster an EnvoyFilter added, istio/istio#35969).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from faultplane.render.ecds import DIRECTIONS, Direction, slot_name
from faultplane.render.resources import RUNTIME_LAYER

XDS_CLUSTER = "faultplane_xds"
# A p50/p99 latency takes two chained slots; each slot costs one stream per sidecar.
DEFAULT_SLOTS = 2
HTTP_FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTER_FILTER = "envoy.filters.http.router"
HCM_FILTER = "envoy.filters.network.http_connection_manager"

# Istio: the ConfigMap the pod annotation names, the label the EnvoyFilter selects pods
# by (only pods that carry the override: elsewhere the slots' cluster does not exist and
# istiod's listener updates would be NACKed), and the annotation itself.
BOOTSTRAP_CONFIGMAP = "faultplane-bootstrap"
BOOTSTRAP_KEY = "custom_bootstrap.json"
BOOTSTRAP_ANNOTATION = "sidecar.istio.io/bootstrapOverride"
ENVOY_FILTER = "faultplane-slots"
DEFAULT_SELECTOR: Mapping[str, str] = MappingProxyType({"faultplane.io/overlay": "enabled"})
ISTIO_CONTEXTS: dict[Direction, str] = {
    "inbound": "SIDECAR_INBOUND",
    "outbound": "SIDECAR_OUTBOUND",
}

_DNS_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


@dataclass(frozen=True)
class XdsAddress:
    """Where sidecars reach faultplane's xDS port: an IP literal or a DNS name."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_xds_address(text: str) -> XdsAddress:
    """`HOST:PORT` (`[v6]:PORT` for IPv6) or ValueError saying what is wrong with it."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"must be HOST:PORT, e.g. faultplane.example:18000, not {text!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, e.g. [::1]:18000, not {text!r}")
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"port must be a whole number from 1 to 65535, not {port_text!r}")
    address = XdsAddress(host, int(port_text))
    if not (address.is_ip or (not bracketed and _DNS_NAME.fullmatch(host))):
        raise ValueError(f"host must be an IP address or a DNS name, not {host!r}")
    return address


def slot_names(direction: Direction, slots: int) -> list[str]:
    return [slot_name(direction, i) for i in range(slots)]


def config_source() -> dict[str, Any]:
    """The one ConfigSource of the layer and every slot (a fresh copy per call).

    `initial_fetch_timeout` 1 s: Envoy holds its listeners until RTDS init ends, and with
    faultplane down the default (15 s) would delay every sidecar start by 15 s. The node
    (~60 KB on 1.40) is sent once per stream, not with every ACK."""
    return {
        "resource_api_version": "V3",
        "initial_fetch_timeout": "1s",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
    }


# One xDS address, or several: the replicas of faultplane on one store, between which
# Envoy fails over (faultplane.replicas).
Addresses = XdsAddress | Sequence[XdsAddress]


def xds_cluster(address: Addresses) -> dict[str, Any]:
    """The bootstrap cluster for faultplane's xDS: HTTP/2, STATIC for IPs, else STRICT_DNS;
    one endpoint per replica address."""
    addresses = [address] if isinstance(address, XdsAddress) else list(address)
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": a.host, "port_value": a.port}}}}
        for a in addresses
    ]
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if all(a.is_ip for a in addresses) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": endpoints}],
        },
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def rtds_layer() -> dict[str, Any]:
    """The runtime layer faultplane leases its switches in (resource name = layer name)."""
    return {
        "name": RUNTIME_LAYER,
        "rtds_layer": {"name": RUNTIME_LAYER, "rtds_config": config_source()},
    }


def slot_filter(name: str) -> dict[str, Any]:
    """One fault-filter slot fetched from faultplane.

    Its default, `HTTPFault{}`, passes every request and reads no runtime key, and it
    applies at once: a slot that waits for faultplane holds the listener, and a slot
    with no default answers 500 to every request while faultplane is unreachable."""
    return {
        "name": name,
        "config_discovery": {
            "config_source": config_source(),
            "default_config": {"@type": HTTP_FAULT_TYPE},
            "apply_default_config_without_warming": True,
            "type_urls": [HTTP_FAULT_TYPE],
        },
    }


def envoy_overlay(address: Addresses, slots: int = DEFAULT_SLOTS) -> dict[str, Any]:
    """The plain-Envoy snippet: `{"clusters", "layers", "http_filters": {inbound, outbound}}`."""
    return {
        "clusters": [xds_cluster(address)],
        "layers": [rtds_layer()],
        "http_filters": {
            direction: [slot_filter(name) for name in slot_names(direction, slots)]
            for direction in DIRECTIONS
        },
    }


def custom_bootstrap(address: Addresses) -> dict[str, Any]:
    """What Istio merges into its bootstrap (`--config-yaml`: repeated fields are appended)."""
    return {
        "static_resources": {"clusters": [xds_cluster(address)]},
        "layered_runtime": {"layers": [rtds_layer()]},
    }


def istio_overlay(
    address: Addresses,
    slots: int = DEFAULT_SLOTS,
    namespace: str | None = None,
    selector: Mapping[str, str] = DEFAULT_SELECTOR,
) -> list[dict[str, Any]]:
    """The two Istio objects: the bootstrap-override ConfigMap and the slots' EnvoyFilter.

    Without `namespace` they carry none, for `kubectl apply -n NS`; the ConfigMap must
    live in the pods' namespace."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(BOOTSTRAP_CONFIGMAP, namespace),
            "data": {BOOTSTRAP_KEY: json.dumps(custom_bootstrap(address), indent=2)},
        },
        {
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": _metadata(ENVOY_FILTER, namespace),
            "spec": {
                "workloadSelector": {"labels": dict(selector)},
                "configPatches": [
                    _insert_before_router(direction, name)
                    for direction in DIRECTIONS
                    for name in slot_names(direction, slots)
                ],
            },
        },
    ]


def _insert_before_router(direction: Direction, name: str) -> dict[str, Any]:
    """An HTTP_FILTER patch; patches run in order, so slot 0 ends up first, then 1, router."""
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": ISTIO_CONTEXTS[direction],
            "listener": {
                "filterChain": {
                    "filter": {"name": HCM_FILTER, "subFilter": {"name": ROUTER_FILTER}}
                }
            },
        },
        "patch": {"operation": "INSERT_BEFORE", "value": slot_filter(name)},
    }


def _metadata(name: str, namespace: str | None) -> dict[str, str]:
    return {"name": name, **({"namespace": namespace} if namespace else {})}
