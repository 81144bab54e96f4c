"""xDS resource type URLs and the order in which a change is pushed."""

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
RUNTIME: Final = "type.googleapis.com/envoy.service.runtime.v3.Runtime"

# Make-before-break: clusters before the endpoints that fill them, listeners before the
# routes they name, runtime (which only flips percentages) last.
PUSH_ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, RUNTIME)

# Types a sidecar subscribes to as a wildcard (every resource it should have); the others
# it subscribes to by name.
WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    RUNTIME: "rtds",
}


def short_name(type_url: str) -> str:
    """The familiar three-or-four letter name (cds, eds, ...) used in logs, metrics and the API."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
