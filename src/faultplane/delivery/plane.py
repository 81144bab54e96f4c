"""Puts faults on sidecars and takes them off, and collects each sidecar's answer.

Holds the desired fault state of every sidecar (which injections' faults it carries, and
whether switched on), the slots reserved at admission for injections not yet pushed, and
the lease of every switched-on fault; each change is handed to the xDS side whole, then
every target's ACK or NACK is awaited (bounded). A change is rendered for every target
before any target's state is touched, so a push never stops half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import structlog

from faultplane.delivery.identity import Identity
from faultplane.model.injection import Evidence
from faultplane.model.spec import injection_of
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import AckOutcome, AckTimeout, Answer, SidecarStatus

log = structlog.get_logger("faultplane.delivery")


class Candidate(Protocol):
    """A connected sidecar faults can land on, as selection sees it."""

    @property
    def node_id(self) -> str: ...

    @property
    def service(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


class FaultPlane(Protocol):
    """What the scheduler needs from the xDS side: delivery.source.MeshSource (full
    mesh) and delivery.overlay.OverlaySource (overlay mode) implement it.

    `arm_type` is the type whose ACK says a fault is armed (routes, or ECDS slots).
    """

    arm_type: str

    def candidates(self, service: str, namespace: str | None = None) -> Sequence[Candidate]: ...

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources: ...

    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]: ...

    def is_connected(self, node_id: str) -> bool: ...

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome: ...

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """`wait_for` of every (sidecar, generation), answers in order, a timeout as an
        `AckTimeout` value (one push waits once, not once per sidecar)."""
        ...

    def departed(self, before: float) -> list[str]:
        """Sidecars whose last stream ended before `before` (epoch seconds)."""
        ...

    def forget(self, node_id: str) -> bool:
        """Drop a departed sidecar's records; False if it came back or is awaited."""
        ...

    def identity(self, sidecar: SidecarStatus) -> Identity:
        """The sidecar as selection, SLOs and ListSidecars see it."""
        ...

    def stats_address(self, node_id: str) -> str | None:
        """HOST:PORT serving the sidecar's Envoy stats (`/stats/prometheus`), None if not
        known; ValueError (saying why) when its metadata gives one that is no address."""
        ...


def lease_resources(
    cache: SnapshotCache,
    node_id: str,
    resources: Resources,
    faults: Sequence[FaultAssignment],
    deadman_ttl: float,
    lease_until: float | None,
) -> dict[str, int]:
    """Set the sidecar's fault resources; returns the generation per type to await.

    While any fault is switched on, the runtime layer (and only it) is leased for
    `deadman_ttl` seconds (re-sent every third of it) and never beyond `lease_until`:
    should faultplane die, Envoy drops the keys and every fault is off within the TTL.
    """
    leased = any(fault.enabled for fault in faults)
    ttl = {types.RUNTIME: deadman_ttl} if leased else None
    return cache.set_resources(
        node_id, resources, ttl_seconds=ttl, lease_until=lease_until if leased else None
    )


async def wait_each(
    plane: FaultPlane, waits: list[tuple[str, int]], type_url: str, timeout: float
) -> list[Answer]:
    """`wait_many` as one `wait_for` per sidecar, for a plane whose waits are not all
    alike (overlay sidecars may first wait for a missing subscription)."""

    async def one(node: str, generation: int) -> Answer:
        try:
            return await plane.wait_for(node, type_url, generation, timeout)
        except AckTimeout as exc:
            return exc

    return list(await asyncio.gather(*(one(node, gen) for node, gen in waits)))


# One part's change in a push: its nodes, its delivery id, its fault (None: removed).
Change = tuple[Sequence[str], str, FaultAssignment | None]


class Delivery:
    def __init__(self, plane: FaultPlane, ack_timeout: float) -> None:
        self.plane = plane
        self._ack_timeout = ack_timeout
        self._faults: dict[str, dict[str, FaultAssignment]] = {}  # node -> injection -> fault
        # Admitted but not (yet) pushed: node -> injection -> fault. They hold their slots,
        # so a later admission cannot take them and a push cannot run out of them.
        self._reserved: dict[str, dict[str, FaultAssignment]] = {}
        self._lease_until: dict[str, float] = {}  # injection -> monotonic lease end
        self._lapses: dict[str, asyncio.TimerHandle] = {}  # injection -> its lease's end

    def planned(self, node: str) -> dict[str, FaultAssignment]:
        """Every fault `node` carries or has reserved, by injection (admission renders a
        new one on top of these)."""
        return {**self._reserved.get(node, {}), **self._faults.get(node, {})}

    def render_with(self, node: str, fault: FaultAssignment) -> Resources:
        """What `node` would be sent with `fault` added to everything it carries or has
        reserved (raises SlotsExhausted)."""
        planned = self.planned(node)
        planned.pop(fault.injection_id, None)
        return self.plane.render(node, [*planned.values(), fault])

    def reserve(self, nodes: Sequence[str], injection_id: str, fault: FaultAssignment) -> None:
        """Hold slots for the injection on every node, or on none (raises SlotsExhausted)."""
        for node in nodes:
            self.render_with(node, fault)
        for node in nodes:
            self._reserved.setdefault(node, {})[injection_id] = fault

    def release(self, injection_id: str) -> None:
        """The injection is over: the reservations of every part of it and its lease go."""
        for node, held in list(self._reserved.items()):
            for key in [k for k in held if injection_of(k) == injection_id]:
                del held[key]
            if not held:
                del self._reserved[node]
        self.lease(injection_id, None)

    def drop(self, injection_id: str) -> None:
        """Take the injection's fault out of every desired state now, waiting for no one.

        The fail-safe path of a lifecycle that died: the sidecars get the change as soon
        as their streams can send it, and the lease stops being renewed.
        """
        for node, faults in self._faults.items():
            mine = [key for key in faults if injection_of(key) == injection_id]
            for key in mine:
                del faults[key]
            if mine:
                self.plane.set_faults(node, list(faults.values()), self._lease_of(node))
        self.release(injection_id)

    def forget_departed(self, before: float) -> int:
        """Forget the sidecars gone since before `before` that carry and await no fault,
        so that a fleet whose pods come and go does not grow the server's memory; how
        many were forgotten."""
        return sum(
            self.plane.forget(node)
            for node in self.plane.departed(before)
            if not self.planned(node)
        )

    def carries(self, node: str, injection_id: str) -> FaultAssignment | None:
        return self._faults.get(node, {}).get(injection_id)

    def lease(self, injection_id: str, until: float | None) -> None:
        """Switched-on faults of this injection may not outlive `until` (monotonic): the
        sidecars' TTLs are capped there, and at `until` the keys are switched off here
        too, should the lifecycle not have withdrawn them by then."""
        lapse = self._lapses.pop(injection_id, None)
        if lapse is not None:
            lapse.cancel()
        if until is None:
            self._lease_until.pop(injection_id, None)
            return
        self._lease_until[injection_id] = until
        # The event loop's clock is time.monotonic, the lease's clock.
        self._lapses[injection_id] = asyncio.get_running_loop().call_at(
            until, self._lapse, injection_id
        )

    def leased(self, injection_id: str) -> bool:
        """Its fault is (being) switched on under a lease."""
        return injection_id in self._lease_until

    def _lapse(self, injection_id: str) -> None:
        """The lease ran out before the withdrawal (a stuck lifecycle, a clock stepped
        back): this injection's keys go off now; other injections on the same sidecars
        keep theirs and their leases."""
        self._lapses.pop(injection_id, None)
        self._lease_until.pop(injection_id, None)
        for node, faults in self._faults.items():
            mine = [k for k, f in faults.items() if injection_of(k) == injection_id and f.enabled]
            for key in mine:
                faults[key] = replace(faults[key], enabled=False)
            if mine:
                self.plane.set_faults(node, list(faults.values()), self._lease_of(node))
        log.warning("lease ran out before the withdrawal: keys switched off",
                    injection=injection_id)  # fmt: skip

    def place(self, nodes: Sequence[str], injection_id: str, fault: FaultAssignment) -> None:
        """Put the fault in the nodes' desired state without waiting for anyone (restore)."""
        for node in nodes:
            faults = self._faults.setdefault(node, {})
            faults[injection_id] = fault
            self.plane.set_faults(node, list(faults.values()), self._lease_of(node))

    async def push(
        self,
        nodes: Sequence[str],
        injection_id: str,
        fault: FaultAssignment | None,
        type_url: str,
        wait_gone: bool = True,
    ) -> tuple[Evidence, ...]:
        """Set (or, with None, remove) the injection's fault on `nodes`; collect answers.

        With `wait_gone` False, disconnected sidecars are not waited for: their lease ends
        the fault, and they get the new state when they reconnect.
        """
        return await self.push_many([(nodes, injection_id, fault)], type_url, wait_gone)

    async def push_many(
        self, changes: Sequence[Change], type_url: str, wait_gone: bool = True
    ) -> tuple[Evidence, ...]:
        """`push` for several parts at once: every (nodes, delivery id, fault or None)
        change is applied, and each sidecar gets one new state carrying all of them and
        answers once (two parts on one sidecar are one push, not two racing ones)."""
        updated: dict[str, dict[str, FaultAssignment]] = {}
        for nodes, key, fault in changes:
            for node in nodes:
                faults = updated.setdefault(node, dict(self._faults.get(node, {})))
                if fault is None:
                    faults.pop(key, None)
                else:
                    faults[key] = fault
        for node, faults in updated.items():
            self.plane.render(node, list(faults.values()))  # raises before anything changed
        waits: list[tuple[str, int]] = []
        for node, faults in updated.items():
            self._faults[node] = faults
            generation = self.plane.set_faults(node, list(faults.values()), self._lease_of(node))
            waits.append((node, generation[type_url]))
        # What each answer is evidence about (an agent pod's: its kernel set, whatever phase).
        about = getattr(self.plane, "evidence_type", lambda node, type_url: type_url)
        gone = {node for node, _ in waits if not wait_gone and not self.plane.is_connected(node)}
        awaited = [wait for wait in waits if wait[0] not in gone]
        answers = dict(
            zip(
                (node for node, _ in awaited),
                await self.plane.wait_many(awaited, type_url, self._ack_timeout),
                strict=True,
            )
        )
        return tuple(
            Evidence(node, types.short_name(about(node, type_url)), "", "disconnected")
            if node in gone
            else self._evidence(node, types.short_name(about(node, type_url)), answers[node])
            for node, _ in waits
        )

    def _lease_of(self, node: str) -> float | None:
        leases = [
            self._lease_until[injection_of(key)]
            for key, fault in self._faults.get(node, {}).items()
            if fault.enabled and injection_of(key) in self._lease_until
        ]
        return min(leases, default=None)

    def _evidence(self, node: str, short: str, answer: Answer) -> Evidence:
        if isinstance(answer, AckTimeout):
            error = f"no answer within {self._ack_timeout:g}s"
            if answer.later_nack is not None:
                nack = answer.later_nack
                error += f" (a later change sent with it, {nack.version}, was NACKed: {nack.error})"
            return Evidence(node, short, "", "timeout", error)
        return Evidence(
            node, short, answer.version, "acked" if answer.acked else "nacked", answer.error
        )


__all__ = ["Candidate", "Delivery", "FaultPlane", "SlotsExhausted", "lease_resources", "wait_each"]
