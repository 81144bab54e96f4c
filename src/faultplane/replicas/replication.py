"""One replica's machinery, started and stopped with its control server: the heartbeat
and shared registry (faultplane.replicas.sync), the replicated fault plane
(faultplane.replicas.plane), the delivery of other replicas' faults to the sidecars held
here (faultplane.replicas.foreign), and the LISTEN that tells both of changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from faultplane.lifecycle.admission import Refused
from faultplane.model.injection import Injection
from faultplane.replicas.admission import AdmissionGate
from faultplane.replicas.foreign import ForeignFaults, SpecParser
from faultplane.replicas.ownership import OWNED_STATES, Ownership
from faultplane.replicas.plane import ReplicatedPlane
from faultplane.replicas.sidecars import SharedSidecarRegistry
from faultplane.replicas.sync import RegistrySync

if TYPE_CHECKING:
    from faultplane.lifecycle.scheduler import Scheduler
    from faultplane.store.postgres import PostgresStore
    from faultplane.store.postgres_listen import PostgresListener


log = structlog.get_logger("faultplane.replicas")

# An abort handed to the owner waits for its two withdrawal pushes, and a takeover.
STOP_WAIT_FACTOR = 2.0
STOP_POLL_SECONDS = 0.1


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
        self.ownership = Ownership(store.leases, registry.replica)
        store.injections.fence = self.ownership  # every write of an injection is fenced
        self._ack_timeout = ack_timeout
        self.foreign: ForeignFaults | None = None
        self.listener: PostgresListener | None = None
        self._scheduler: Scheduler | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.admission: AdmissionGate | None = None
        self._transitions: asyncio.Queue[str] = asyncio.Queue()
        self._set_serving: Callable[[bool], Awaitable[None]] | None = None

    def attach(self, scheduler: Scheduler) -> None:
        """The scheduler takes at a restart only the injections this replica claims, and
        hands an abort of one it does not own to its owner."""
        from faultplane.store.postgres_leases import AdmissionLock

        self._scheduler = scheduler
        self.ownership.attach(scheduler)
        scheduler.claim = self.ownership.claim
        scheduler.stop_elsewhere = self.stop_elsewhere
        scheduler.stop_all_elsewhere = self.stop_all_elsewhere
        self.admission = AdmissionGate(self.store, AdmissionLock(self.store.url))
        scheduler.admission_gate = self.admission.hold

    async def stop_elsewhere(self, injection_id: str, reason: str, principal: str) -> Injection:
        """Ask the injection's owner to abort it; return once the store shows it ended."""
        assert self._scheduler is not None
        leases = self.store.leases
        await asyncio.to_thread(leases.request_stop, injection_id, reason, principal)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_FACTOR * self._ack_timeout + self.ownership.ttl
        while loop.time() < deadline:
            injection = await self._scheduler.find(injection_id)
            if not injection.state.live:
                return injection
            await asyncio.sleep(STOP_POLL_SECONDS)  # polling the store, bounded above
        owner = await asyncio.to_thread(leases.owner, injection_id)
        waited = STOP_WAIT_FACTOR * self._ack_timeout + self.ownership.ttl
        raise Refused(
            f"injection {injection_id}: its owner (replica {owner or 'none, being taken over'}) "
            f"was asked to abort it and has not finished within {waited:g}s; it will "
            "withdraw it, or its next owner will"
        )

    async def stop_all_elsewhere(self, reason: str, principal: str) -> list[Injection]:
        """Abort-all on this replica: every live injection another replica owns is
        handed to its owner, all at once; those that ended (the others are logged)."""
        assert self._scheduler is not None
        running = set(self._scheduler.running())
        stored = await asyncio.to_thread(self.store.injections.load, OWNED_STATES)
        ids = [record.id for record in stored if record.id not in running]
        stops = [self.stop_elsewhere(i, reason, principal) for i in ids]
        ended = []
        for injection_id, outcome in zip(
            ids, await asyncio.gather(*stops, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, Injection):
                ended.append(outcome)
            else:
                log.warning("abort-all: not stopped by its owner in time",
                            injection=injection_id, error=str(outcome))  # fmt: skip
        return ended

    @property
    def name(self) -> str:
        return self.registry.replica

    async def start(
        self,
        parse_spec: SpecParser,
        xds_address: str,
        api_address: str,
        set_serving: Callable[[bool], Awaitable[None]] | None = None,
    ) -> list[asyncio.Task[None]]:
        """Beat once (so this replica's view includes the others' sidecars before it
        serves), then run; the tasks to cancel at stop. `set_serving` is told whether the
        replica should report SERVING (False while the store is out of reach)."""
        self._set_serving = set_serving
        self.sync.on_store.append(self._store_changed)
        from faultplane.store.postgres_faults import EVIDENCE_CHANNEL, FAULTS_CHANNEL
        from faultplane.store.postgres_injections import TRANSITIONS_CHANNEL
        from faultplane.store.postgres_leases import STOP_CHANNEL
        from faultplane.store.postgres_listen import PostgresListener
        from faultplane.store.postgres_settings import SETTINGS_CHANNEL

        self.sync.xds_address, self.sync.api_address = xds_address, api_address
        if self.admission is not None:
            self.admission.parse_spec = parse_spec
        await self.sync.beat()
        foreign = self.foreign = ForeignFaults(
            self.plane, self.store, parse_spec, self._ack_timeout
        )
        self.registry.on_change(foreign.look)
        channels = (
            FAULTS_CHANNEL, EVIDENCE_CHANNEL, STOP_CHANNEL, SETTINGS_CHANNEL, TRANSITIONS_CHANNEL,
        )  # fmt: skip
        self.listener = PostgresListener(self.store.url, channels, self._notified, self._missed)
        self.listener.start()
        return [
            asyncio.create_task(self.sync.run(), name="replica-heartbeat"),
            asyncio.create_task(foreign.run(), name="replica-foreign-faults"),
            asyncio.create_task(self.ownership.run(), name="replica-ownership"),
            asyncio.create_task(self._relay_transitions(), name="replica-transitions"),
        ]

    def _store_changed(self, reachable: bool) -> None:
        """Fail safe: without the store this replica cannot see whether a fault should
        still be on, so every lease it serves ends now and it reports NOT_SERVING (load
        balancers and Envoys prefer the other replicas); when the store is back it
        serves again and re-reads what it missed."""
        self.plane.cap_leases(None if reachable else time.monotonic())
        if reachable:
            self._missed()
        if self._set_serving is not None:
            self._background_task(self._set_serving(reachable))

    def _background_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _relay_transitions(self) -> None:
        """Another replica's transition (NOTIFY "id seq replica"), read back from the store in
        the order announced, to this replica's API watchers."""
        assert self._scheduler is not None
        while True:
            injection_id, seq_text, writer = (await self._transitions.get()).split(" ")
            if writer == self.name:
                continue  # our own: published as it happened
            try:
                injection = await self._scheduler.find(injection_id)
            except Exception as exc:  # not readable now: a watcher misses one event
                log.warning("cannot relay a transition", injection=injection_id, error=str(exc))
                continue
            seq = int(seq_text)
            if seq < len(injection.transitions):
                self._scheduler.publish_remote(injection, injection.transitions[seq])

    def _missed(self) -> None:
        """The listener (re)connected: whatever it missed is read from the tables."""
        if self.foreign is not None:
            self.foreign.look()
        self.ownership.wake()
        self._reload_freeze()

    def _reload_freeze(self) -> None:
        if self._scheduler is not None:
            self._background_task(self._scheduler.reload_freeze())

    def _notified(self, channel: str, payload: str) -> None:
        from faultplane.store.postgres_faults import (
            EVIDENCE_CHANNEL,
            FAULTS_CHANNEL,
            evidence_from_payload,
        )
        from faultplane.store.postgres_injections import TRANSITIONS_CHANNEL
        from faultplane.store.postgres_leases import STOP_CHANNEL

        if channel == FAULTS_CHANNEL:
            if self.foreign is not None:
                self.foreign.look(payload)
        elif channel == EVIDENCE_CHANNEL:
            self.plane.on_evidence(evidence_from_payload(payload))
        elif channel == STOP_CHANNEL:
            self.ownership.wake()
        elif channel == TRANSITIONS_CHANNEL:
            self._transitions.put_nowait(payload)
        elif payload == "freeze":
            self._reload_freeze()

    async def stop(self) -> None:
        """After the tasks were cancelled: stop listening, sign off."""
        if self.listener is not None:
            await self.listener.stop()
        if self.foreign is not None:
            await self.foreign.close()
        await self.sync.leave()
        if self.admission is not None:
            self.admission.close()
