"""Renders a pod's Envoy bootstrap from the template that sits beside mesh.yaml.

Two shapes: the full mesh's (`bootstrap.yaml.tmpl`: everything from faultplane over ADS)
and the overlay demo's (`bootstrap-overlay.yaml.tmpl`: everything from another control
plane, plus the fault layer exactly as `faultplane overlay envoy` prints it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

import yaml

from faultplane.model.mesh import Pod
from faultplane.render.overlay_config import XdsAddress, envoy_overlay

TEMPLATE_NAME = "bootstrap.yaml.tmpl"
OVERLAY_TEMPLATE_NAME = "bootstrap-overlay.yaml.tmpl"
# The namespace Istio-shaped demo nodes say they run in.
DEMO_NAMESPACE = "demo"


def render_bootstrap(template: str, pod: Pod, xds_host: str, xds_port: int) -> str:
    return Template(template).substitute(
        pod=pod.name,
        service=pod.service,
        labels=json.dumps(dict(sorted(pod.labels.items()))),
        admin_port=pod.ports.admin,
        xds_host=xds_host,
        xds_port=xds_port,
    )


def render_overlay_bootstrap(
    template: str,
    pod: Pod,
    base: XdsAddress,
    faultplane: XdsAddress,
    istio: bool = False,
) -> str:
    """An overlay sidecar's bootstrap: ADS from the base control plane at `base`, and the
    fault layer's cluster and RTDS layer from the snippet builder, appended where the
    README says to paste them. With `istio`, the node says who it is as an Istio proxy
    does (see `node_metadata`)."""
    cluster = f"{pod.service}.{DEMO_NAMESPACE}" if istio else pod.service
    text = Template(template).substitute(
        pod=pod.name,
        cluster=json.dumps(cluster),
        metadata=json.dumps(node_metadata(pod, istio)),
        admin_port=pod.ports.admin,
        base_host=base.host,
        base_port=base.port,
    )
    bootstrap: dict[str, Any] = yaml.safe_load(text)
    snippet = envoy_overlay(faultplane)
    bootstrap["static_resources"]["clusters"].extend(snippet["clusters"])
    bootstrap["layered_runtime"]["layers"].extend(snippet["layers"])
    return yaml.safe_dump(bootstrap, sort_keys=False)


def node_metadata(pod: Pod, istio: bool = False) -> Mapping[str, Any]:
    """What an overlay sidecar's node tells faultplane about itself.

    Plain Envoy: faultplane's own keys, `service`, `labels` and `stats_address` (the admin
    port, which serves /stats/prometheus). Istio-shaped: the keys an Istio proxy sends
    (`NAME`, `NAMESPACE`, `LABELS` with the service as `app`, `INSTANCE_IPS`), plus
    `stats_address`: on loopback every pod shares one IP, so Istio's rule (stats at the
    first instance IP, port 15090) cannot reach each pod's own stats; the explicit key
    wins, as it would on a real Istio node that sets it.
    """
    stats_address = f"{pod.address}:{pod.ports.admin}"
    labels = dict(sorted(pod.labels.items()))
    if not istio:
        return {"service": pod.service, "labels": labels, "stats_address": stats_address}
    return {
        "NAME": pod.name,
        "NAMESPACE": DEMO_NAMESPACE,
        "LABELS": {"app": pod.service, **labels},
        "INSTANCE_IPS": pod.address,
        "stats_address": stats_address,
    }


def template_beside(mesh_file: Path, name: str = TEMPLATE_NAME) -> str:
    return (mesh_file.parent / name).read_text()
