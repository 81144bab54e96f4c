"""sovereign template: the backend every Envoy forwards to."""

from typing import Any


def call(discovery_request: Any, **_: Any) -> list[dict[str, Any]]:
    port = int(discovery_request.node.metadata["backend_port"])
    return [
        {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "backend",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "backend",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    ]
