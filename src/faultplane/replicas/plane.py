"""The fault plane of one replica among several: its own faults go to every target
through the store, and the other replicas' faults reach the sidecars it holds.

`ReplicatedPlane` wraps the local fault plane (faultplane.delivery: MeshSource or
OverlaySource) and is what this replica's lifecycles push through:

- Owner side. What the lifecycles set on a sidecar (`set_faults`) is applied locally, as
  before, and published to the store (faultplane.store.postgres_faults) as this replica's
  whole set of faults on that sidecar, with a new sequence number. Waiting for a sidecar
  held by another replica waits for that replica's evidence naming a sequence number at
  least the published one (announced by NOTIFY, polled as a fallback); a sidecar held
  here is waited for on its own streams, as with one server.
- Holder side (faultplane.replicas.foreign): the desired faults other replicas published
  for the sidecars held here are merged with this replica's own, and their evidence
  recorded once the sidecar answers.

A sidecar's state here is always (own faults) + (foreign faults), so neither side ever
overwrites the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from faultplane.delivery.identity import Identity
from faultplane.delivery.plane import Candidate, FaultPlane
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources
from faultplane.replicas.sidecars import SharedSidecarRegistry
from faultplane.store.base import StoreError
from faultplane.store.replica_rows import FaultChange, FaultEvidence
from faultplane.xds.registry import AckOutcome, AckTimeout, Answer, SidecarStatus, one_answer

if TYPE_CHECKING:
    from faultplane.store.postgres_faults import PostgresFaults

log = structlog.get_logger("faultplane.replicas")

# A foreign fault: the assignment and its lease's end (epoch seconds, None while off).
Foreign = tuple[FaultAssignment, float | None]


def to_monotonic(wall: float) -> float:
    return time.monotonic() + (wall - time.time())


def to_wall(monotonic: float) -> float:
    return time.time() + (monotonic - time.monotonic())


class ReplicatedPlane:
    """A FaultPlane (faultplane.delivery.plane) over the local one; see the module doc."""

    def __init__(
        self, inner: FaultPlane, registry: SharedSidecarRegistry, faults: PostgresFaults
    ) -> None:
        self.inner = inner
        self.arm_type = inner.arm_type
        self.registry = registry
        self.name = registry.replica
        self._faults = faults
        self._own: dict[str, tuple[list[FaultAssignment], float | None]] = {}
        self.foreign: dict[str, list[Foreign]] = {}
        self._dirty: set[str] = set()
        self._published: dict[str, int] = {}  # node -> the seq of its last publish
        self._flush_lock = asyncio.Lock()
        self._flushing: asyncio.Task[None] | None = None
        self._evidence: dict[str, FaultEvidence] = {}  # node -> latest evidence for us
        self._waiters: dict[str, list[tuple[int, asyncio.Future[AckOutcome]]]] = {}
        self._cap: float | None = None  # see cap_leases

    # What selection, rendering and listings ask: the local plane's answers.
    def candidates(self, service: str, namespace: str | None = None) -> Sequence[Candidate]:
        return self.inner.candidates(service, namespace)

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources:
        return self.inner.render(node_id, faults)

    def is_connected(self, node_id: str) -> bool:
        return self.inner.is_connected(node_id)

    def departed(self, before: float) -> list[str]:
        return self.inner.departed(before)

    def forget(self, node_id: str) -> bool:
        return self.inner.forget(node_id)

    def identity(self, sidecar: SidecarStatus) -> Identity:
        return self.inner.identity(sidecar)

    def stats_address(self, node_id: str) -> str | None:
        return self.inner.stats_address(node_id)

    def evidence_type(self, node_id: str, type_url: str) -> str:
        """What an answer is evidence about: the inner plane's word (an agent pod's
        kernel set), else the type."""
        about = getattr(self.inner, "evidence_type", None)
        return about(node_id, type_url) if about is not None else type_url

    # Owner side.
    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]:
        """This replica's faults on the sidecar: applied here, published to the store."""
        self._own[node_id] = (list(faults), lease_until)
        if not faults and lease_until is None:
            self._own.pop(node_id)
        self._dirty.add(node_id)
        self.flush_soon()
        return self.apply(node_id)

    def cap_leases(self, until: float | None) -> None:
        """No lease served here may run past `until` (monotonic; None: no cap): while
        the store is out of reach the faults on this replica's sidecars lapse, since it
        can no longer see whether they should still be on (fail safe)."""
        self._cap = until
        for node in {*self._own, *self.foreign}:
            self.apply(node)

    def apply(self, node_id: str) -> dict[str, int]:
        """Set the sidecar's local state to own + foreign faults; the generations."""
        own, lease = self._own.get(node_id, ([], None))
        foreign = self.foreign.get(node_id, [])
        caps = [self._cap] if self._cap is not None else []
        own_lease = min([lease, *caps] if lease is not None else caps, default=None)
        leases = [own_lease] if own_lease is not None else []
        leases += [to_monotonic(until) for f, until in foreign if f.enabled and until is not None]
        merged = [*own, *(fault for fault, _ in foreign)]
        try:
            return self.inner.set_faults(node_id, merged, min(leases, default=None))
        except SlotsExhausted:
            # Another owner's fault leaves no room: this replica's own go first.
            log.warning("foreign faults do not fit beside this replica's; left out",
                        node=node_id)  # fmt: skip
            return self.inner.set_faults(node_id, own, own_lease)

    def flush_soon(self) -> None:
        """Publish what changed, in the background (retried by `retry_flush`)."""
        if self._flushing is None or self._flushing.done():
            with contextlib.suppress(RuntimeError):  # no loop: the next wait flushes
                self._flushing = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except StoreError as exc:
            log.warning("cannot publish faults to the store; retrying", error=str(exc))

    @property
    def unpublished(self) -> bool:
        """Some sidecar's faults changed here and are not in the store yet."""
        return bool(self._dirty)

    async def flush(self) -> None:
        """Publish every sidecar's changed faults (raises StoreError; they stay due)."""
        async with self._flush_lock:
            nodes, self._dirty = self._dirty, set()
            if not nodes:
                return
            changes = {node: self._changes(node) for node in nodes}
            try:
                seqs = await asyncio.to_thread(self._faults.publish, self.name, changes)
            except StoreError:
                self._dirty |= nodes
                raise
            self._published.update(seqs)

    def _changes(self, node_id: str) -> list[FaultChange]:
        own, lease = self._own.get(node_id, ([], None))
        until = to_wall(lease) if lease is not None else None
        return [
            FaultChange(f.injection_id, f.enabled, f.level, until if f.enabled else None)
            for f in own
        ]

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        return await one_answer(self.wait_many, node_id, type_url, generation, timeout)

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """Sidecars held here answer on their streams; the others through their holder's
        evidence (or, should they connect here meanwhile, on their streams)."""
        try:
            await self.flush()
        except StoreError as exc:
            log.warning("cannot publish faults; remote sidecars cannot be reached", error=str(exc))
        here = [w for w in waits if self.registry.holder(w[0]) == self.name]
        local = dict(
            zip((n for n, _ in here), await self._local(here, type_url, timeout), strict=True)
        ) if here else {}  # fmt: skip
        elsewhere = [w for w in waits if w[0] not in local]
        remote = await asyncio.gather(*(self._either(w, type_url, timeout) for w in elsewhere))
        local.update(zip((n for n, _ in elsewhere), remote, strict=True))
        return [local[node] for node, _ in waits]

    async def _local(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        return await self.inner.wait_many(waits, type_url, timeout)

    async def _either(self, wait: tuple[str, int], type_url: str, timeout: float) -> Answer:
        """The holder's evidence or, if the sidecar connects here, its own answer."""
        node, generation = wait
        tasks = [
            asyncio.ensure_future(self._remote(node, generation, timeout)),
            asyncio.ensure_future(self._local([wait], type_url, timeout)),
        ]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    answer = task.result()
                    answer = answer[0] if isinstance(answer, list) else answer
                    if not isinstance(answer, AckTimeout):
                        return answer
            return AckTimeout(generation, None)
        finally:
            for task in tasks:
                task.cancel()

    async def _remote(self, node_id: str, generation: int, timeout: float) -> Answer:
        seq = self._published.get(node_id)
        if seq is None:
            return AckTimeout(generation, None)
        known = self._evidence.get(node_id)
        if known is not None and known.seq >= seq:
            return AckOutcome(known.acked, known.version, known.error)
        future: asyncio.Future[AckOutcome] = asyncio.get_running_loop().create_future()
        entry = (seq, future)
        self._waiters.setdefault(node_id, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return AckTimeout(generation, None)
        finally:
            waiters = self._waiters.get(node_id, [])
            if entry in waiters:
                waiters.remove(entry)
            if not waiters:
                self._waiters.pop(node_id, None)

    def on_evidence(self, evidence: FaultEvidence) -> None:
        """A holder's evidence (from NOTIFY or a poll): resolves the waits it answers."""
        if evidence.owner != self.name:
            return
        known = self._evidence.get(evidence.node_id)
        if known is not None and known.seq > evidence.seq:
            return
        self._evidence[evidence.node_id] = evidence
        outcome = AckOutcome(evidence.acked, evidence.version, evidence.error)
        for seq, future in self._waiters.get(evidence.node_id, []):
            if seq <= evidence.seq and not future.done():
                future.set_result(outcome)

    def awaited(self) -> list[str]:
        """Sidecars whose holder's evidence is being waited for (polled as a fallback)."""
        return list(self._waiters)

    def own_on(self, node_id: str) -> list[FaultAssignment]:
        return list(self._own.get(node_id, ([], None))[0])


SpecLoader = Callable[[str], object]
