"""What the injection metrics say, kept up to date from the lifecycle's transitions.

`InjectionTally` holds, per server, how many injections are in each state, which fault
parts are live on which service, and how many transitions of each kind there were. It
changes only when told of a transition (`observe`, fed from the same watch the CLI
uses), never by polling: a scrape reads it as it is. At start it is `seed`ed from the
store's counts and the live injections in memory, so a restarted server reports the
same numbers its predecessor did.

Finished states count what the store held at start plus what finished since; an
injection retention prunes later is still counted until the next restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from faultplane.faults.registry import kind_of
from faultplane.model.injection import Injection, State, Transition
from faultplane.observability.reasons import reason_kind

LIVE = tuple(state for state in State if state.live)
FINISHED = tuple(state for state in State if not state.live)
FaultKey = tuple[str, str]  # (service, fault type)


def fault_keys(injection: Injection) -> tuple[FaultKey, ...]:
    """One (service, fault type) per part: what `faultplane_active_faults` counts."""
    return tuple(
        (part.target.service, kind_of(part.fault.kind).name) for part in injection.spec.parts
    )


class InjectionTally:
    def __init__(self) -> None:
        self._live: dict[str, State] = {}  # live injection id -> its state
        self._faults: dict[str, tuple[FaultKey, ...]] = {}  # ACTIVE injection id -> parts
        self._finished: Counter[State] = Counter()
        self.transitions: Counter[tuple[str, str]] = Counter()  # (to state, reason kind)

    def seed(self, finished: Mapping[str, int], live: Mapping[str, str]) -> None:
        """Start from the store, before a restart's restore runs: the count of finished
        injections per state name, and each live injection's state (id -> state name).
        What was tallied before is replaced. `refresh` then adds what memory knows."""
        self._finished = Counter({state: int(finished.get(state.value, 0)) for state in FINISHED})
        self._faults.clear()
        self._live = {injection_id: State(state) for injection_id, state in live.items()}

    def refresh(self, live: Iterable[Injection], replace: bool = False) -> None:
        """The live injections in memory, once restored: their states and fault parts
        (the store's rows carry no parsed spec). `replace`: forget every other live one
        (after a lagged watch lost events; ends it lost are not counted)."""
        if replace:
            self._live.clear()
            self._faults.clear()
        for injection in live:
            self._set(injection, injection.state)

    def observe(self, injection: Injection, change: Transition) -> None:
        """One transition, as published to watchers."""
        self.transitions[(change.to_state.value, reason_kind(injection, change))] += 1
        if change.to_state.live:
            self._set(injection, change.to_state)
            return
        self._faults.pop(injection.id, None)
        # Only a live injection ends: a replayed end must not count twice.
        if self._live.pop(injection.id, None) is not None:
            self._finished[change.to_state] += 1

    def _set(self, injection: Injection, state: State) -> None:
        if not state.live:
            return
        self._live[injection.id] = state
        if state is State.ACTIVE:
            self._faults[injection.id] = fault_keys(injection)
        else:
            self._faults.pop(injection.id, None)

    def by_state(self) -> dict[str, int]:
        """Every state, those with no injection included (an alert must see the 0)."""
        live = Counter(self._live.values())
        return {state.value: live[state] + self._finished[state] for state in State}

    def active_faults(self) -> dict[FaultKey, int]:
        """(service, fault type) -> parts of ACTIVE injections carrying it."""
        return dict(Counter(key for keys in self._faults.values() for key in keys))

    def waiting(self) -> int:
        """Experiments that wait to start: QUEUED ones and those awaiting a second
        person's approval."""
        waits = (State.PENDING_APPROVAL, State.QUEUED)
        return sum(1 for state in self._live.values() if state in waits)
