"""The sidecar registry of one replica, with the other replicas' sidecars in its view.

`SharedSidecarRegistry` is the xDS registry (faultplane.xds.registry) of the streams this
process holds, unchanged, plus a snapshot of the sidecars other replicas hold, refreshed
from the store by faultplane.replicas.sync. `sidecars()` and `get()` answer for the whole
fleet, so target selection (both fault planes' `candidates`) and ListSidecars see a
sidecar whichever replica holds it; everything about streams, ACKs and waits stays about
this process's own streams. A sidecar held here wins over a stale remote row for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2

from faultplane.store.replica_rows import RemoteSidecar, SidecarRow
from faultplane.xds.registry import SidecarRegistry, SidecarStatus


@dataclass
class RemoteSidecarStatus(SidecarStatus):
    """A sidecar whose stream another replica holds: connected (as far as that replica's
    last heartbeat says), with no stream and no xDS evidence here."""

    replica: str = ""

    @property
    def connected(self) -> bool:  # type: ignore[override]  # no stream here, held there
        return True


class SharedSidecarRegistry(SidecarRegistry):
    """This replica's streams, and the other replicas' sidecars (see the module doc)."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica
        self._remote: dict[str, RemoteSidecarStatus] = {}
        # Set when a stream opens or a sidecar's last one ends: the heartbeat publishes
        # the change at once instead of at its next beat.
        self.changed = asyncio.Event()
        self._listeners: list[Callable[[str], None]] = []

    def connected(self, node: base_pb2.Node, peer: str = "", served: str | None = None) -> int:
        key = super().connected(node, peer, served)
        self._changed(node.id)
        return key

    def disconnected(self, node_id: str, stream: int | None = None) -> None:
        super().disconnected(node_id, stream)
        if not self._local_connected(node_id):
            self._changed(node_id)

    def _changed(self, node_id: str) -> None:
        self.changed.set()
        for listener in self._listeners:
            listener(node_id)

    def get(self, node_id: str) -> SidecarStatus | None:
        local = super().get(node_id)
        if local is not None and local.connected:
            return local
        return self._remote.get(node_id, local)

    def sidecars(self) -> list[SidecarStatus]:
        local = super().sidecars()
        held = {sidecar.node_id for sidecar in local if sidecar.connected}
        merged = [s for s in local if s.connected or s.node_id not in self._remote]
        merged += [s for node, s in self._remote.items() if node not in held]
        return sorted(merged, key=lambda s: s.node_id)

    def holder(self, node_id: str) -> str | None:
        """The replica holding the sidecar's stream (this one's name if here), or None."""
        if self._local_connected(node_id):
            return self.replica
        remote = self._remote.get(node_id)
        return remote.replica if remote is not None else None

    def local_nodes(self) -> list[str]:
        """The sidecars whose streams this replica holds."""
        return [s.node_id for s in super().sidecars() if s.connected]

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener(node_id)` whenever a sidecar connects here or leaves."""
        self._listeners.append(listener)

    def local_rows(self) -> list[SidecarRow]:
        """This replica's connected sidecars, as its heartbeat publishes them."""
        return [
            SidecarRow(s.node_id, s.cluster, dict(s.metadata), s.connected_at)
            for s in super().sidecars()
            if s.connected
        ]

    def set_remote(self, sidecars: Sequence[RemoteSidecar]) -> None:
        """The other replicas' sidecars, as the store last listed them."""
        self._remote = {s.node_id: _remote_status(s) for s in sidecars}

    def _local_connected(self, node_id: str) -> bool:
        local = super().get(node_id)
        return local is not None and local.connected


def _remote_status(sidecar: RemoteSidecar) -> RemoteSidecarStatus:
    return RemoteSidecarStatus(
        sidecar.node_id,
        sidecar.cluster,
        sidecar.metadata,
        peer=f"replica {sidecar.replica}",
        connected_at=sidecar.connected_at,
        replica=sidecar.replica,
    )


def replica_of(registry: SidecarRegistry, sidecar: SidecarStatus) -> str:
    """The replica holding the sidecar's stream, for listings ("" without replicas)."""
    if isinstance(sidecar, RemoteSidecarStatus):
        return sidecar.replica
    return registry.replica if isinstance(registry, SharedSidecarRegistry) else ""
