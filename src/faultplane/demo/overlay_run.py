"""What the demo mesh does differently in overlay mode (`MeshRun(..., overlay=True)`).

Each sidecar's listeners, routes and clusters come from a second control plane (the
demo's base server, standing in for istiod); faultplane runs as `serve --overlay` and
reaches the sidecars only through the fault slots and runtime layer their config
declares. So an overlay run starts one more process, first, and renders another
bootstrap; and a sidecar counts as ready only once it is attached to faultplane (it
holds faultplane's answer for its runtime layer and for every one of its slots),
because Envoy goes LIVE without faultplane after the layer's 1 s fetch timeout.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from faultplane.demo.bootstrap import (
    OVERLAY_TEMPLATE_NAME,
    render_overlay_bootstrap,
    template_beside,
)
from faultplane.demo.processes import Child
from faultplane.model.mesh import ControlPorts, Pod
from faultplane.render.ecds import DIRECTIONS
from faultplane.render.overlay_config import DEFAULT_SLOTS, XdsAddress, slot_names
from faultplane.server.config import HOST

BASE_SERVER = "base-server"
# The RTDS layer's accepted updates (the subscription's stats scope is `runtime.`).
ATTACHED_RUNTIME = "runtime.update_success"


@dataclass(frozen=True)
class OverlayMesh:
    """The overlay run's second control plane and how its sidecars are configured.

    `port`: the base server's ADS port; `template`: the overlay bootstrap template;
    `slots`: fault slots per direction in every HCM (faultplane is started with the same
    `--fault-slots`); `istio_nodes`: pods whose node metadata is Istio-shaped (`LABELS`,
    `NAMESPACE`, `NAME`, `INSTANCE_IPS`).
    """

    port: int
    template: str
    slots: int = DEFAULT_SLOTS
    istio_nodes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, port: int, mesh_file: Path, istio_nodes: Collection[str] = ()) -> OverlayMesh:
        """With the template beside `mesh_file`."""
        template = template_beside(mesh_file, OVERLAY_TEMPLATE_NAME)
        return cls(port, template, istio_nodes=frozenset(istio_nodes))

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def base_server(self, resolved_mesh: Path, run_dir: Path) -> Child:
        """The base server's process (not started)."""
        argv = [
            sys.executable, "-m", "faultplane.demo.base_server", "--mesh", str(resolved_mesh),
            "--port", str(self.port), "--slots", str(self.slots),
        ]  # fmt: skip
        return Child(BASE_SERVER, argv, run_dir / f"{BASE_SERVER}.log")

    def serve_args(self, control: ControlPorts) -> list[str]:
        """`faultplane serve` flags of the fault layer, on the mesh's control ports."""
        return [
            "--overlay",
            "--xds-port", str(control.xds_port),
            "--api-port", str(control.api_port),
            "--metrics-port", str(control.metrics_port),
            "--fault-slots", str(self.slots),
        ]  # fmt: skip

    def bootstrap(self, pod: Pod, xds_port: int) -> str:
        """The pod's bootstrap: base config from this base server, faults from faultplane's
        xDS port."""
        return render_overlay_bootstrap(
            self.template,
            pod,
            base=XdsAddress(HOST, self.port),
            faultplane=XdsAddress(HOST, xds_port),
            istio=pod.name in self.istio_nodes,
        )

    def slot_names(self) -> list[str]:
        """Every fault slot a sidecar's config declares, both directions."""
        return [name for direction in DIRECTIONS for name in slot_names(direction, self.slots)]

    async def attached(self, admin: str) -> bool:
        """Whether the sidecar whose admin is at `admin` has accepted faultplane's runtime
        layer and a config for every fault slot (Envoy counts each subscription's
        accepted updates: `runtime.*` for the one RTDS layer, one scope per ECDS slot)."""
        counters = [ATTACHED_RUNTIME] + [
            f"extension_config_discovery.http_filter.{name}.update_success"
            for name in self.slot_names()
        ]
        try:
            stats = await _admin_stats(admin, "update_success")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return all(stats.get(name, 0) >= 1 for name in counters)


async def _admin_stats(admin: str, contains: str) -> dict[str, int]:
    """The sidecar's counters and gauges whose name contains `contains`."""
    url = f"http://{admin}/stats"
    params = {"format": "json", "filter": re.escape(contains)}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
        session.get(url, params=params) as response,
    ):
        body = await response.json(content_type=None)
    return {
        stat["name"]: stat["value"]
        for stat in body.get("stats", [])
        if isinstance(stat.get("value"), int)
    }
