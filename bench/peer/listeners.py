"""sovereign template: one inbound listener per Envoy (port from node metadata), with the
same idle fault slot and router as a faultplane listener; routes come by RDS (REST)."""

from typing import Any


def call(discovery_request: Any, **_: Any) -> list[dict[str, Any]]:
    port = int(discovery_request.node.metadata["listener_port"])
    rest = {
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": ["sovereign"],
            "refresh_delay": "1s",
            "request_timeout": "1s",
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "rds": {"route_config_name": "ingress", "config_source": rest},
        "http_filters": [
            {
                "name": "faultplane.fault.0",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return [
        {
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "ingress",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
        }
    ]
