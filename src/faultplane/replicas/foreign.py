"""The holder side of faults across replicas: the faults other replicas own, delivered
to the sidecars this replica holds, with their evidence recorded in the store.

`ForeignFaults` keeps, for each sidecar held here, the desired faults the other (live)
owners published for it (faultplane.store.postgres_faults), merges them into the
sidecar's state through the ReplicatedPlane, and once the sidecar answers records, per
owner, the evidence naming the highest sequence number that state carried. It looks
again when told (NOTIFY on the faults channel, a sidecar connecting here, the listener
reconnecting) and every `reconcile` seconds whatever it was told: notifications are only
a hint, the tables are the truth. An owner whose heartbeat went stale counts for nobody,
so its faults leave the sidecars here (never a fault without a live owner to guard it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from faultplane.model.spec import InjectionSpec
from faultplane.render.faults import FaultAssignment
from faultplane.replicas.plane import Foreign, ReplicatedPlane
from faultplane.replicas.sync import STALE_SECONDS
from faultplane.store.base import StoreError
from faultplane.store.replica_rows import DesiredFault, FaultEvidence
from faultplane.xds import types
from faultplane.xds.registry import AckTimeout

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore

log = structlog.get_logger("faultplane.replicas")

RECONCILE_SECONDS = 2.0
PRUNE_SECONDS = 300.0  # how often old tombstones are pruned
SpecParser = Callable[[Mapping[str, Any], bool], InjectionSpec]


class ForeignFaults:
    def __init__(
        self,
        plane: ReplicatedPlane,
        store: PostgresStore,
        parse_spec: SpecParser,
        ack_timeout: float,
        reconcile: float = RECONCILE_SECONDS,
        stale: float = STALE_SECONDS,
    ) -> None:
        self._plane = plane
        self._store = store
        self._parse_spec = parse_spec
        self._ack_timeout = ack_timeout
        self._reconcile = reconcile
        self._stale = stale
        self._specs: dict[str, InjectionSpec] = {}
        self._evidenced: dict[tuple[str, str], int] = {}  # (node, owner) -> seq recorded
        self._due: set[str] = set()  # sidecars to look at now
        self._all_due = True
        self._wake = asyncio.Event()
        self._answering: dict[str, asyncio.Task[None]] = {}
        self._next_prune = time.monotonic() + PRUNE_SECONDS

    def look(self, node_id: str | None = None) -> None:
        """Look at this sidecar (None: every one held here) as soon as possible."""
        if node_id is None:
            self._all_due = True
        else:
            self._due.add(node_id)
        self._wake.set()

    async def run(self) -> None:
        """Deliver and evidence until cancelled."""
        last_full = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._reconcile)
            self._wake.clear()
            held = set(self._plane.registry.local_nodes())
            if self._all_due or time.monotonic() - last_full >= self._reconcile:
                nodes, self._all_due, last_full = held, False, time.monotonic()
            else:
                nodes = self._due & held
            # Sidecars that left keep no foreign faults here (they are re-read on return).
            for gone in [node for node in self._plane.foreign if node not in held]:
                del self._plane.foreign[gone]
            self._due.clear()
            if self._plane.unpublished:  # a publish failed (the store was away): again
                self._plane.flush_soon()
            try:
                await self.refresh(sorted(nodes))
                await self._poll_evidence()
                if nodes is held:
                    await self._tidy()
            except StoreError as exc:
                log.warning("cannot read other replicas' faults; retrying", error=str(exc))

    async def refresh(self, nodes: list[str]) -> None:
        if not nodes:
            return
        fresh_after = time.time() - self._stale
        rows = await asyncio.to_thread(
            self._store.faults.desired, nodes, self._plane.name, fresh_after
        )
        by_node: dict[str, list[DesiredFault]] = {node: [] for node in nodes}
        for row in rows:
            by_node[row.node_id].append(row)
        for node, desired in by_node.items():
            await self._deliver(node, desired)

    async def _deliver(self, node: str, desired: list[DesiredFault]) -> None:
        foreign: list[Foreign] = []
        for row in desired:
            if row.removed:
                continue
            fault = await self._assignment(row)
            if fault is not None:
                foreign.append((fault, row.lease_until if row.enabled else None))
        changed = foreign != self._plane.foreign.get(node, [])
        owners: dict[str, int] = {}
        for row in desired:
            owners[row.owner] = max(owners.get(row.owner, 0), row.seq)
        due = {o: s for o, s in owners.items() if self._evidenced.get((node, o), 0) < s}
        if not changed and not due:
            return
        if foreign:
            self._plane.foreign[node] = foreign
        else:
            self._plane.foreign.pop(node, None)
        generations = self._plane.apply(node)
        if due:
            previous = self._answering.pop(node, None)
            if previous is not None:
                previous.cancel()  # the newer state answers for both
            task = asyncio.create_task(self._answer(node, generations, due))
            self._answering[node] = task

    async def _assignment(self, row: DesiredFault) -> FaultAssignment | None:
        spec = self._specs.get(row.injection_id)
        if spec is None:
            stored = await asyncio.to_thread(self._store.injections.get, row.injection_id)
            if stored is None:
                return None
            spec = self._specs[row.injection_id] = self._parse_spec(stored.body["document"], False)
        index = int(row.fault_key.split(".", 1)[1]) if "." in row.fault_key else 0
        if index >= len(spec.parts):
            return None
        part = spec.parts[index]
        return FaultAssignment(row.fault_key, part.fault, part.target.scope, row.enabled, row.level)

    async def _answer(self, node: str, generations: dict[str, int], due: dict[str, int]) -> None:
        """Wait for the sidecar's answer to its new state; record it for each owner."""
        waited = [t for t in (self._plane.arm_type, types.RUNTIME) if t in generations]
        acked, version, error = True, "", ""
        for type_url in waited:
            try:
                outcome = await self._plane.inner.wait_for(
                    node, type_url, generations[type_url], self._ack_timeout
                )
            except AckTimeout:
                return  # no evidence: the owner's wait times out and says so
            version = outcome.version
            if not outcome.acked:
                acked, error = False, outcome.error
                break
        evidence = [
            FaultEvidence(node, owner, seq, self._plane.name, acked, version, error)
            for owner, seq in due.items()
        ]
        try:
            await asyncio.to_thread(self._store.faults.record_evidence, evidence)
        except StoreError as exc:
            log.warning("cannot record evidence; the next reconcile retries", error=str(exc))
            return
        for e in evidence:
            self._evidenced[(node, e.owner)] = e.seq

    async def _tidy(self) -> None:
        """After a full pass: forget the specs no fault here needs; now and then, prune
        old tombstones (any replica may: they are nobody's once old)."""
        needed = {fault.injection_id.split(".", 1)[0] for fs in self._plane.foreign.values()
                  for fault, _ in fs}  # fmt: skip
        for injection_id in [i for i in self._specs if i not in needed]:
            del self._specs[injection_id]
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_SECONDS
            await asyncio.to_thread(self._store.faults.prune, time.time())

    async def _poll_evidence(self) -> None:
        """The fallback for a lost NOTIFY: read the evidence still awaited."""
        awaited = self._plane.awaited()
        if not awaited:
            return
        found = await asyncio.to_thread(self._store.faults.evidence, self._plane.name, awaited)
        for evidence in found:
            self._plane.on_evidence(evidence)

    async def close(self) -> None:
        for task in self._answering.values():
            task.cancel()
        await asyncio.gather(*self._answering.values(), return_exceptions=True)
