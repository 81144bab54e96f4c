"""xDS resource type URLs and the order in which a change is pushed."""

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# ECDS: an HTTP filter's config (overlay mode's fault slots), `TypedExtensionConfig`.
EXTENSION_CONFIG: Final = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
RUNTIME: Final = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
# A node agent's kernel faults (faultplane.delivery.agents), leased like the runtime layer.
NETWORK_FAULT: Final = "type.googleapis.com/faultplane.kernel.v1.NetworkFault"

# Every type, in the order a change goes out. Make-before-break: clusters before the
# endpoints that fill them, listeners before the routes they name, fault slots (ECDS)
# armed before the runtime keys that switch them on, runtime (which only flips
# percentages) last.
SEND_ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION_CONFIG, RUNTIME, NETWORK_FAULT)

# The types a full-mesh sidecar subscribes to over ADS, in SEND_ORDER. ECDS is not among
# them: only overlay sidecars get it, one per-type stream per slot.
PUSH_ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, RUNTIME)

# Types a sidecar subscribes to as a wildcard (every resource it should have); the others
# it subscribes to by name.
WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER, NETWORK_FAULT})

# Types Envoy subscribes to with one stream per resource name (ECDS: one per filter slot),
# so that each stream's ACK is evidence about its own resources only, and an error names
# the resource it is about.
PER_NAME_STREAMS: Final = frozenset({EXTENSION_CONFIG})

SHORT_NAMES: Final = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    EXTENSION_CONFIG: "ecds",
    RUNTIME: "rtds",
    NETWORK_FAULT: "kernel",
}


def short_name(type_url: str) -> str:
    """The familiar three-or-four letter name (cds, eds, ...) used in logs, metrics and the API."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
