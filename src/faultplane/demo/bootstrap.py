"""Renders a pod's Envoy bootstrap from the template that sits beside mesh.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from faultplane.model.mesh import Pod

TEMPLATE_NAME = "bootstrap.yaml.tmpl"


def render_bootstrap(template: str, pod: Pod, xds_host: str, xds_port: int) -> str:
    return Template(template).substitute(
        pod=pod.name,
        service=pod.service,
        labels=json.dumps(dict(sorted(pod.labels.items()))),
        admin_port=pod.ports.admin,
        xds_host=xds_host,
        xds_port=xds_port,
    )


def template_beside(mesh_file: Path) -> str:
    return (mesh_file.parent / TEMPLATE_NAME).read_text()
