"""sovereign template: the inbound route, with an abort fault on it while `fault.on`
(the template context, reloaded from a file by sovereign every second)."""

from typing import Any


def call(fault: Any = None, **_: Any) -> list[dict[str, Any]]:
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}
    if isinstance(fault, dict) and fault.get("on"):
        route["typed_per_filter_config"] = {
            "faultplane.fault.0": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {
                    "http_status": int(fault.get("http_status", 418)),
                    "percentage": {"numerator": 100, "denominator": "HUNDRED"},
                },
            }
        }
    return [
        {
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": "ingress",
            "virtual_hosts": [{"name": "inbound", "domains": ["*"], "routes": [route]}],
        }
    ]
