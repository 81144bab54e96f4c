"""Owns every injection from admission to withdrawal.

Admission (target selection, conflict and slot checks, registration) is synchronous, so
concurrent CreateInjection calls on the event loop cannot interleave inside it. Each
admitted injection then runs one lifecycle task:

    arm (RDS, faults at 0 %) -> enable (RTDS keys, leased) -> ACTIVE
      -> deadline timer | abort request | activation failure
      -> withdraw (RTDS first: instant off; then RDS) -> COMPLETED | ABORTED | FAILED

Every push waits for each target's ACK (bounded by `ack_timeout`), and the answers are
kept as the transition's evidence.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from faultplane.scheduler.model import Evidence, Injection, SloReading, State, Transition
from faultplane.scheduler.targets import select_targets
from faultplane.spec import InjectionSpec
from faultplane.xds import types
from faultplane.xds.faults import FaultAssignment, SlotsExhausted
from faultplane.xds.registry import AckOutcome, SidecarStatus
from faultplane.xds.resources import Resources

log = structlog.get_logger("faultplane.scheduler")

# The lease on switched-on faults outlives the deadline by this much, so the timer, not
# the lease, ends a fault while the control server is up.
LEASE_GRACE_SECONDS = 0.5


class FaultPlane(Protocol):
    """What the scheduler needs from the xDS side (implemented by xds.source.MeshSource)."""

    def candidates(self, service: str) -> list[SidecarStatus]: ...

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources: ...

    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]: ...

    def is_connected(self, node_id: str) -> bool: ...

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome: ...


class Refused(Exception):
    """The request is valid but cannot be carried out now (FAILED_PRECONDITION)."""


class NotFound(KeyError):
    pass


@dataclass(frozen=True)
class Plan:
    matched: tuple[str, ...]
    targets: tuple[str, ...]
    rendered: dict[str, Resources]  # per target: what it would be sent, fault switched on


HELD = "hypothesis held"
REFUTED = "hypothesis refuted"


@dataclass(frozen=True)
class _End:
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    verdict: str = ""


class Scheduler:
    def __init__(self, plane: FaultPlane, ack_timeout: float = 10.0) -> None:
        self._plane = plane
        self._ack_timeout = ack_timeout
        self._injections: dict[str, Injection] = {}
        self._faults: dict[str, dict[str, FaultAssignment]] = {}  # node -> injection -> fault
        self._lease_until: dict[str, float] = {}  # injection -> monotonic lease end
        self._stops: dict[str, asyncio.Future[_End]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchers: set[asyncio.Queue[tuple[Injection, Transition]]] = set()

    # -- admission -------------------------------------------------------------------

    def plan(self, spec: InjectionSpec) -> Plan:
        injection_id = new_injection_id()
        matched, targets = self._select(spec, injection_id)
        rendered = {
            node: self._render_with(node, self._assignment(injection_id, spec, enabled=True))
            for node in targets
        }
        return Plan(matched, targets, rendered)

    def create(self, spec: InjectionSpec, document: Mapping[str, Any]) -> Injection:
        injection_id = new_injection_id()
        matched, targets = self._select(spec, injection_id)
        armed = self._assignment(injection_id, spec, enabled=False)
        for node in targets:
            self._render_with(node, armed)
        injection = Injection(injection_id, spec, targets, matched, document)
        self._injections[injection_id] = injection
        self._stops[injection_id] = asyncio.get_running_loop().create_future()
        self._tasks[injection_id] = asyncio.create_task(self._lifecycle(injection))
        log.info(
            "injection created",
            injection=injection_id,
            owner=spec.owner,
            service=spec.target.service,
            targets=list(targets),
            duration_s=spec.duration_seconds,
        )
        self._publish(injection, injection.transitions[-1])
        return injection

    def _select(
        self, spec: InjectionSpec, injection_id: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        target = spec.target
        sidecars = [(s.node_id, s.labels) for s in self._plane.candidates(target.service)]
        matched, chosen = select_targets(target, injection_id, sidecars)
        if not chosen:
            raise Refused(
                f"target: selector {target.selector.text!r} matches no connected sidecar "
                f"of {target.service} ({len(sidecars)} connected)"
            )
        if spec.steady_state.compare == "control" and len(sidecars) == len(chosen):
            raise Refused(
                f"steady_state.compare: control mode needs unfaulted sidecars of "
                f"{target.service}, but all {len(sidecars)} would be faulted"
            )
        for node in chosen:
            for other in self._faults.get(node, {}).values():
                if other.scope == target.scope:
                    raise Refused(
                        f"target: sidecar {node} already has live injection "
                        f"{other.injection_id} on the same traffic scope"
                    )
        return matched, chosen

    def _render_with(self, node: str, fault: FaultAssignment) -> Resources:
        try:
            return self._plane.render(node, [*self._faults.get(node, {}).values(), fault])
        except SlotsExhausted as exc:
            raise Refused(f"target: sidecar {node}: {exc}") from exc

    @staticmethod
    def _assignment(injection_id: str, spec: InjectionSpec, enabled: bool) -> FaultAssignment:
        return FaultAssignment(injection_id, spec.fault, spec.target.scope, enabled)

    # -- queries ---------------------------------------------------------------------

    def get(self, injection_id: str) -> Injection:
        try:
            return self._injections[injection_id]
        except KeyError:
            raise NotFound(injection_id) from None

    def active(self) -> list[Injection]:
        return [inj for inj in self._injections.values() if inj.state is State.ACTIVE]

    def list(self, states: set[State] | None = None, service: str = "") -> list[Injection]:
        """Newest first."""
        return sorted(
            (
                inj
                for inj in self._injections.values()
                if (not states or inj.state in states)
                and (not service or inj.spec.target.service == service)
            ),
            key=lambda inj: (inj.created_at, inj.id),
            reverse=True,
        )

    def watch(self) -> Watch:
        """Every transition from now on; subscribed before this returns."""
        return Watch(self._watchers)

    # -- rollback --------------------------------------------------------------------

    async def abort(self, injection_id: str, reason: str) -> Injection:
        """Withdraw a live injection; returns once every target answered the withdrawal."""
        injection = self.get(injection_id)
        if not injection.state.live:
            raise Refused(f"injection {injection_id} is already {injection.state.value}")
        self._request_stop(injection_id, _operator_abort(reason))
        await asyncio.shield(self._tasks[injection_id])
        return injection

    def record_reading(self, injection_id: str, reading: SloReading) -> None:
        self.get(injection_id).readings.append(reading)

    def refute(self, injection_id: str, reason: str, breach_limit_at: float) -> None:
        """The steady-state guard's abort: withdraw now, without waiting here."""
        injection = self.get(injection_id)
        if injection.state.live and not self._stops[injection_id].done():
            injection.breach_limit_at = breach_limit_at
            self._request_stop(injection_id, _End(State.ABORTED, reason, verdict=REFUTED))

    async def abort_all(self, reason: str) -> list[Injection]:
        live = [inj for inj in self._injections.values() if inj.state.live]
        for injection in live:
            self._request_stop(injection.id, _operator_abort(reason))
        await asyncio.gather(*(asyncio.shield(self._tasks[inj.id]) for inj in live))
        return live

    async def close(self) -> None:
        """Stop every lifecycle task without withdrawing: leases end the faults."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _request_stop(self, injection_id: str, end: _End) -> None:
        stop = self._stops[injection_id]
        if not stop.done():
            stop.set_result(end)

    # -- lifecycle -------------------------------------------------------------------

    async def _lifecycle(self, injection: Injection) -> None:
        end = await self._run_until_end(injection)
        evidence = await self._withdraw(injection)
        injection.verdict = end.verdict
        self._transition(injection, end.state, end.reason, end.evidence + evidence)
        self._lease_until.pop(injection.id, None)

    async def _run_until_end(self, injection: Injection) -> _End:
        stop = self._stops[injection.id]
        activation = asyncio.create_task(self._activate(injection))
        await asyncio.wait({activation, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not activation.done():
            activation.cancel()
            await asyncio.gather(activation, return_exceptions=True)
            return stop.result()
        failure = activation.result()
        if failure is not None:
            return failure
        if stop.done():
            return stop.result()
        timer = asyncio.get_running_loop().call_later(
            injection.spec.duration_seconds,
            self._request_stop,
            injection.id,
            _End(State.COMPLETED, "deadline reached", verdict=HELD),
        )
        try:
            return await stop
        finally:
            timer.cancel()

    async def _activate(self, injection: Injection) -> _End | None:
        """Arm, then enable, on every target; None once ACTIVE, else why it failed."""
        armed = self._assignment(injection.id, injection.spec, enabled=False)
        arm = await self._push(injection.targets, injection.id, armed, types.ROUTE)
        if failure := _failure(arm, "arming"):
            return failure
        self._lease_until[injection.id] = (
            time.monotonic() + injection.spec.duration_seconds + LEASE_GRACE_SECONDS
        )
        enabled = replace(armed, enabled=True)
        enable = await self._push(injection.targets, injection.id, enabled, types.RUNTIME)
        if failure := _failure(enable, "switching on", arm):
            return failure
        self._transition(
            injection, State.ACTIVE, "every target acknowledged the fault", arm + enable
        )
        return None

    async def _withdraw(self, injection: Injection) -> tuple[Evidence, ...]:
        """RTDS first (the fault stops at once), then RDS (the config goes away)."""
        carrying = [
            node for node in injection.targets if injection.id in self._faults.get(node, {})
        ]
        off = replace(self._faults[carrying[0]][injection.id], enabled=False) if carrying else None
        switch_off = await self._push(carrying, injection.id, off, types.RUNTIME, wait_gone=False)
        remove = await self._push(carrying, injection.id, None, types.ROUTE, wait_gone=False)
        return switch_off + remove

    async def _push(
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
        waits = []
        for node in nodes:
            faults = self._faults.setdefault(node, {})
            if fault is None:
                faults.pop(injection_id, None)
            else:
                faults[injection_id] = fault
            generation = self._plane.set_faults(node, list(faults.values()), self._lease_of(node))
            waits.append(self._answer(node, type_url, generation[type_url], wait_gone))
        return tuple(await asyncio.gather(*waits))

    def _lease_of(self, node: str) -> float | None:
        leases = [
            self._lease_until[injection_id]
            for injection_id, fault in self._faults.get(node, {}).items()
            if fault.enabled and injection_id in self._lease_until
        ]
        return min(leases, default=None)

    async def _answer(self, node: str, type_url: str, generation: int, wait_gone: bool) -> Evidence:
        short = types.short_name(type_url)
        if not wait_gone and not self._plane.is_connected(node):
            return Evidence(node, short, "", "disconnected")
        try:
            outcome = await self._plane.wait_for(node, type_url, generation, self._ack_timeout)
        except TimeoutError:
            return Evidence(node, short, "", "timeout", f"no answer within {self._ack_timeout:g}s")
        return Evidence(
            node, short, outcome.version, "acked" if outcome.acked else "nacked", outcome.error
        )

    def _transition(
        self, injection: Injection, state: State, reason: str, evidence: tuple[Evidence, ...]
    ) -> None:
        change = injection.transition(state, reason, evidence)
        log.info(
            "injection state changed",
            injection=injection.id,
            state=state.value,
            reason=reason,
            sidecars=len(evidence),
        )
        self._publish(injection, change)

    def _publish(self, injection: Injection, change: Transition) -> None:
        for queue in self._watchers:
            queue.put_nowait((injection, change))


class Watch:
    """A subscription to state changes; use as an async iterator, then `close()`."""

    def __init__(self, watchers: set[asyncio.Queue[tuple[Injection, Transition]]]) -> None:
        self._queue: asyncio.Queue[tuple[Injection, Transition]] = asyncio.Queue()
        self._watchers = watchers
        watchers.add(self._queue)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> tuple[Injection, Transition]:
        return await self._queue.get()

    def close(self) -> None:
        self._watchers.discard(self._queue)


def _failure(
    evidence: tuple[Evidence, ...], phase: str, earlier: tuple[Evidence, ...] = ()
) -> _End | None:
    bad = [e for e in evidence if e.outcome != "acked"]
    if not bad:
        return None
    first = bad[0]
    detail = f": {first.error}" if first.error else ""
    reason = f"{phase} failed: sidecar {first.sidecar} {first.outcome} {first.type}{detail}"
    return _End(
        State.FAILED, reason, earlier + evidence, "inconclusive: the fault never took effect"
    )


def _operator_abort(reason: str) -> _End:
    return _End(State.ABORTED, reason, verdict="inconclusive: aborted by an operator")


def new_injection_id() -> str:
    return f"inj-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
