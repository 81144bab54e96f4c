"""Who an overlay sidecar is, read from the node metadata its Envoy sends.

In overlay mode there is no mesh file: a sidecar's service, labels, namespace and the
address of its Prometheus stats come from its node. Two shapes are understood, and may
be mixed on one node:

- plain Envoy (faultplane's own keys): `metadata.service` (else `node.cluster`),
  `metadata.labels` (a map), `metadata.namespace`, `metadata.name`,
  `metadata.stats_address` (HOST:PORT serving `/stats/prometheus`);
- Istio's proxy metadata: `LABELS` (the service from its `app` or
  `service.istio.io/canonical-name` label), `NAMESPACE`, `NAME`, and the stats at the
  first of `INSTANCE_IPS` on the Istio stats port (15090).

Where both shapes give a value, faultplane's own key wins whole (`labels` replaces
`LABELS`, it is not merged into it; `stats_address` over `INSTANCE_IPS`). Metadata comes
from whoever opened the stream, so nothing here trusts it: a value of the wrong type, too
long, or a label map too large is treated as absent, and reading it never raises.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

ISTIO_STATS_PORT = 15090
ISTIO_SERVICE_LABELS = ("app", "service.istio.io/canonical-name")
MAX_LABELS = 64
MAX_TEXT = 320  # a Kubernetes label key at its longest (253 prefix + "/" + 63 name) fits
MAX_INSTANCE_IPS = 16


@dataclass(frozen=True)
class Identity:
    """What selection and SLOs need to know of a sidecar. `labels` are those at connect
    time (Envoy sends its node once per stream); None means the node does not say."""

    service: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    namespace: str | None = None
    name: str | None = None
    stats_address: str | None = None


def identity_of(node: base_pb2.Node, istio_stats_port: int = ISTIO_STATS_PORT) -> Identity:
    """The identity a node's metadata gives, by the rules in the module docstring."""
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    return identity_from(node.cluster, metadata, istio_stats_port)


def identity_from(
    cluster: str, metadata: Mapping[str, Any], istio_stats_port: int = ISTIO_STATS_PORT
) -> Identity:
    """The same from a node's cluster and its metadata as JSON (what the xDS registry
    keeps of a connected sidecar)."""
    istio_labels = _labels(metadata.get("LABELS")) or {}
    explicit_labels = _labels(metadata.get("labels"))
    istio_service = next(
        (istio_labels[key] for key in ISTIO_SERVICE_LABELS if istio_labels.get(key)), None
    )
    return Identity(
        service=_text(metadata.get("service")) or istio_service or _text(cluster) or "",
        labels=istio_labels if explicit_labels is None else explicit_labels,
        namespace=_text(metadata.get("namespace")) or _text(metadata.get("NAMESPACE")),
        name=_text(metadata.get("name")) or _text(metadata.get("NAME")),
        stats_address=_host_port(metadata.get("stats_address"))
        or _istio_stats(metadata.get("INSTANCE_IPS"), istio_stats_port),
    )


def _text(value: object) -> str | None:
    """A non-empty string of bounded length, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TEXT:
        return value
    return None


def _label_value(value: object) -> str | None:
    """Label values as Envoy's YAML may type them: `shard: 1` arrives as the number 1.0
    and is the label "1"; booleans are "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    return None


def _labels(value: object) -> dict[str, str] | None:
    """A label map, or None when there is none or it is not one: a label of the wrong
    type or length is dropped alone, a map with more than MAX_LABELS is refused whole
    (keeping an arbitrary part of it would make selectors match by accident)."""
    if not isinstance(value, Mapping) or len(value) > MAX_LABELS:
        return None
    labels = {}
    for key, raw in value.items():
        text = _label_value(raw)
        if _text(key) is not None and text is not None:
            labels[key] = text
    return labels


def host_port(value: object) -> str | None:
    """`value` if it is HOST:PORT, else None (never raises: metadata is untrusted)."""
    return _host_port(value)


def _host_port(value: object) -> str | None:
    """`value` if it is HOST:PORT (an IPv6 host in brackets) with a port in 1..65535."""
    text = _text(value)
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    if host.startswith("["):
        return text if host.endswith("]") and _ip(host[1:-1]) is not None else None
    return text if ":" not in host and not any(c.isspace() for c in host) else None


def _istio_stats(instance_ips: object, port: int) -> str | None:
    """The first IP of Istio's INSTANCE_IPS (a comma-separated string), at `port`."""
    if isinstance(instance_ips, str):
        candidates: list[object] = list(instance_ips.split(",", MAX_INSTANCE_IPS))
    elif isinstance(instance_ips, list):
        candidates = list(instance_ips[:MAX_INSTANCE_IPS])
    else:
        return None
    for candidate in candidates:
        ip = _ip(candidate.strip()) if isinstance(candidate, str) else None
        if ip is not None:
            return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if len(text) > MAX_TEXT:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
