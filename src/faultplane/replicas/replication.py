"""One replica's machinery, started and stopped with its control server: the heartbeat
and shared registry (faultplane.replicas.sync), the replicated fault plane
(faultplane.replicas.plane), the delivery of other replicas' faults to the sidecars held
here (faultplane.replicas.foreign), and the LISTEN that tells both of changes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faultplane.replicas.foreign import ForeignFaults, SpecParser
from faultplane.replicas.plane import ReplicatedPlane
from faultplane.replicas.sidecars import SharedSidecarRegistry
from faultplane.replicas.sync import RegistrySync

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore
    from faultplane.store.postgres_listen import PostgresListener


class Replication:
    def __init__(
        self,
        store: PostgresStore,
        registry: SharedSidecarRegistry,
        plane: ReplicatedPlane,
        ack_timeout: float,
    ) -> None:
        self.store = store
        self.registry = registry
        self.plane = plane
        self.sync = RegistrySync(store.replicas, registry)
        self._ack_timeout = ack_timeout
        self.foreign: ForeignFaults | None = None
        self.listener: PostgresListener | None = None

    @property
    def name(self) -> str:
        return self.registry.replica

    async def start(
        self, parse_spec: SpecParser, xds_address: str, api_address: str
    ) -> list[asyncio.Task[None]]:
        """Beat once (so this replica's view includes the others' sidecars before it
        serves), then run; the tasks to cancel at stop."""
        from faultplane.store.postgres_faults import EVIDENCE_CHANNEL, FAULTS_CHANNEL
        from faultplane.store.postgres_listen import PostgresListener

        self.sync.xds_address, self.sync.api_address = xds_address, api_address
        await self.sync.beat()
        foreign = self.foreign = ForeignFaults(
            self.plane, self.store, parse_spec, self._ack_timeout
        )
        self.registry.on_change(foreign.look)
        self.listener = PostgresListener(
            self.store.url, (FAULTS_CHANNEL, EVIDENCE_CHANNEL), self._notified, foreign.look
        )
        self.listener.start()
        return [
            asyncio.create_task(self.sync.run(), name="replica-heartbeat"),
            asyncio.create_task(foreign.run(), name="replica-foreign-faults"),
        ]

    def _notified(self, channel: str, payload: str) -> None:
        from faultplane.store.postgres_faults import FAULTS_CHANNEL, evidence_from_payload

        if channel == FAULTS_CHANNEL:
            if self.foreign is not None:
                self.foreign.look(payload)
        else:
            self.plane.on_evidence(evidence_from_payload(payload))

    async def stop(self) -> None:
        """After the tasks were cancelled: stop listening, sign off."""
        if self.listener is not None:
            await self.listener.stop()
        if self.foreign is not None:
            await self.foreign.close()
        await self.sync.leave()
