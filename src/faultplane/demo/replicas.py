"""The local mesh with several control-server replicas on one PostgreSQL store
(`mesh up --replicas N`, `demo --replicas N`).

Replica r1 serves the mesh's declared control ports (so the API address and everything
that reads it stay as with one server); the others get free ports. Every sidecar's
bootstrap lists every replica's xDS address in its `faultplane_xds` cluster: Envoy opens
its ADS stream to one of them and, when that replica goes away, reconnects to another,
which serves it the same faults from the store (faultplane.replicas).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from faultplane.model.mesh import ControlPorts

XDS_CLUSTER = "faultplane_xds"


@dataclass(frozen=True)
class Replica:
    name: str
    xds_port: int
    api_port: int
    metrics_port: int

    def serve_args(self, store_url: str, run_dir: Path) -> list[str]:
        """`faultplane serve` flags of this replica (beside the mesh's own)."""
        return [
            "--store", store_url, "--replica-name", self.name,
            "--audit-key-file", str(run_dir / "audit.key"),
            "--xds-port", str(self.xds_port), "--api-port", str(self.api_port),
            "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip


def plan_replicas(control: ControlPorts, count: int, allocate: Callable[[], int]) -> list[Replica]:
    """r1 on the mesh's control ports, r2.. on free ones."""
    if count < 1:
        raise ValueError(f"replicas: must be 1 or more, not {count}")
    first = Replica("r1", control.xds_port, control.api_port, control.metrics_port)
    return [first] + [
        Replica(f"r{i}", allocate(), allocate(), allocate()) for i in range(2, count + 1)
    ]


# The endpoint of faultplane's xDS cluster as bootstrap.yaml.tmpl renders it.
_ENDPOINT = re.compile(
    r"(?P<indent> *)- endpoint:\n(?P=indent)    address:\n"
    r"(?P=indent)      socket_address: \{address: (?P<host>[^,]+), port_value: \d+\}\n"
)


def with_xds_endpoints(bootstrap: str, host: str, ports: Sequence[int]) -> str:
    """The bootstrap with every replica's xDS address in its control-plane cluster: the
    template's one endpoint repeated per port, comments and layout kept (any other
    bootstrap is rewritten as YAML)."""
    found = list(_ENDPOINT.finditer(bootstrap))
    if len(found) == 1:
        [match] = found
        indent = match["indent"]
        endpoints = "".join(
            f"{indent}- endpoint:\n{indent}    address:\n"
            f"{indent}      socket_address: {{address: {host}, port_value: {port}}}\n"
            for port in ports
        )
        return bootstrap[: match.start()] + endpoints + bootstrap[match.end() :]
    document: dict[str, Any] = yaml.safe_load(bootstrap)
    for cluster in document["static_resources"]["clusters"]:
        if cluster["name"] == XDS_CLUSTER:
            cluster["load_assignment"]["endpoints"] = [
                {"lb_endpoints": [_endpoint(host, port) for port in ports]}
            ]
    return yaml.safe_dump(document, sort_keys=False)


def _endpoint(host: str, port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}


@contextmanager
def replica_store(store_url: str | None, replicas: int) -> Iterator[str | None]:
    """The store several replicas share: `store_url`, or (none given, replicas > 1) a
    throwaway local PostgreSQL server started here and removed on exit
    (faultplane.demo.postgres, run as the unprivileged postgres user under root)."""
    if store_url is not None or replicas <= 1:
        yield store_url
        return
    from faultplane.demo.postgres import local_postgres

    cluster = local_postgres()
    try:
        yield cluster.create_database()
    finally:
        cluster.stop()
        cluster.remove()
