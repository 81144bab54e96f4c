"""What both fault planes (faultplane's own mesh, overlay sidecars) answer alike, from the
xDS registry and cache they share."""

from __future__ import annotations

from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry


class RegistryBacked:
    _registry: SidecarRegistry
    _cache: SnapshotCache

    def is_connected(self, node_id: str) -> bool:
        sidecar = self._registry.get(node_id)
        return sidecar is not None and sidecar.connected

    def departed(self, before: float) -> list[str]:
        return self._registry.departed(before)

    def forget(self, node_id: str) -> bool:
        """Forget a departed sidecar: its record, its desired state, and what the plane
        itself keeps of it (`_forgotten`); False if it came back or is awaited."""
        if not self._registry.forget(node_id):
            return False
        self._cache.forget(node_id)
        self._forgotten(node_id)
        return True

    def _forgotten(self, node_id: str) -> None:
        """Drop what the plane keeps of a forgotten sidecar (nothing, by default)."""
