"""The injection tally behind /metrics, transition by transition (no server needed).

The live tests (tests/test_metrics_live.py) scrape a real server; these pin the cases a
live run rarely shows: a replayed end, a lagged watch, the reason kinds of every end.
"""

from __future__ import annotations

import pytest

from faultplane.api.validate import validate_request
from faultplane.model.injection import Evidence, Injection, State
from faultplane.model.mesh import load_mesh
from faultplane.observability.injections import InjectionTally
from faultplane.observability.reasons import REASON_KINDS, TRANSITION_PAIRS, reason_kind
from tests.conftest import MESH_FILE
from tests.helpers import injection_request

MESH = load_mesh(MESH_FILE)


def injection(injection_id: str, state: State = State.PENDING) -> Injection:
    spec = validate_request(injection_request(), MESH, None)
    return Injection(injection_id, spec, ("payments-api-1",), ("payments-api-1",), state=state)


def test_a_run_to_its_deadline_moves_every_number_once() -> None:
    tally, inj = InjectionTally(), injection("a")
    tally.seed({"COMPLETED": 2}, {})
    tally.observe(inj, inj.transitions[0])
    tally.observe(inj, inj.transition(State.ACTIVE, "every target ACKed"))
    assert tally.by_state()["ACTIVE"] == 1
    assert tally.active_faults() == {("payments-api", "latency"): 1}

    end = inj.transition(State.COMPLETED, "deadline reached")
    tally.observe(inj, end)
    tally.observe(inj, end)  # a replay must not count twice

    assert tally.by_state() == {
        "PENDING_APPROVAL": 0, "PENDING": 0, "ACTIVE": 0,
        "COMPLETED": 3, "ABORTED": 0, "FAILED": 0, "QUEUED": 0, "EXPIRED": 0,
    }  # fmt: skip
    assert tally.active_faults() == {}
    assert tally.transitions[("COMPLETED", "deadline")] == 2
    assert tally.transitions[("ACTIVE", "activated")] == 1


def test_seeded_live_rows_end_once_and_refresh_fills_their_faults() -> None:
    tally = InjectionTally()
    tally.seed({}, {"kept": "ACTIVE", "ended": "PENDING"})
    kept, ended = injection("kept", State.ACTIVE), injection("ended")
    tally.observe(ended, ended.transition(State.ABORTED, "rolled back after a restart"))
    tally.refresh([kept])
    assert tally.by_state()["ACTIVE"] == 1 and tally.by_state()["ABORTED"] == 1
    assert tally.active_faults() == {("payments-api", "latency"): 1}
    tally.refresh([], replace=True)  # a lagged watch: memory is the truth
    assert tally.by_state()["ACTIVE"] == 0 and tally.active_faults() == {}


@pytest.mark.parametrize(
    ("verdict", "reason", "evidence", "to", "kind"),
    [
        ("hypothesis refuted", "steady-state breach: x", (), State.ABORTED, "guard"),
        ("inconclusive: aborted by an operator", "aborted by ananya", (), State.ABORTED,
         "operator"),
        ("", "approval expired after 3600s", (), State.ABORTED, "expired"),
        ("", "activation failed: sidecar p nacked rtds", ("nacked",), State.FAILED, "nack"),
        ("", "activation failed: sidecar p timeout rtds", ("timeout",), State.FAILED,
         "timeout"),
        ("", "internal error in faultplane: boom", (), State.FAILED, "failure"),
        ("hypothesis refuted", "steady-state breach: x (finished after a control-server "
         "restart)", (), State.ABORTED, "guard"),
        ("", "control server restarted before every target acknowledged the fault; rolled "
         "back", (), State.FAILED, "restart"),
    ],
)  # fmt: skip
def test_every_end_has_a_reason_kind_from_the_closed_set(
    verdict: str, reason: str, evidence: tuple[str, ...], to: State, kind: str
) -> None:
    inj = injection("x", State.ACTIVE if to is not State.ABORTED else State.PENDING)
    inj.verdict = verdict
    proof = tuple(Evidence("p", "rtds", "1", outcome) for outcome in evidence)
    change = inj.transition(to, reason, proof)
    assert reason_kind(inj, change) == kind
    assert kind in REASON_KINDS and (to.value, kind) in TRANSITION_PAIRS


@pytest.mark.parametrize(("to", "kind"), [(State.PENDING, "queued"), (State.EXPIRED, "expired")])
def test_leaving_the_queue_is_not_mistaken_for_an_approval(to: State, kind: str) -> None:
    inj = injection("q", State.QUEUED)
    assert reason_kind(inj, inj.transitions[0]) == "queued"
    change = inj.transition(to, "started from the queue; accepted")
    assert reason_kind(inj, change) == kind
    assert (to.value, kind) in TRANSITION_PAIRS
