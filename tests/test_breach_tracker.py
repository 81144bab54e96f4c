"""The guard's breach arithmetic: when a breach starts, lasts, resets, and aborts."""

from __future__ import annotations

import pytest

from faultplane.guard.steady_state import BreachTracker
from faultplane.model.spec import SteadyStateSpec
from faultplane.slo.sources import Reading

STEADY = SteadyStateSpec(slo="pay-ok", min=0.995, abort_after_seconds=2)
COMPARE = SteadyStateSpec(slo="pay-ok", min=0.995, abort_after_seconds=2, compare="control")


def test_seed_loop_aborts_exactly_after_abort_after() -> None:
    """The reference article's toy loop, one reading a second (exactly: see below for
    readings at real, jittered times)."""
    tracker = BreachTracker(STEADY)
    values = [0.999, 0.998, 0.997, 0.992, 0.991, 0.991, 0.999, 0.999]
    observed = []
    first_abort = None
    for t, value in enumerate(values, start=1):
        reading = tracker.observe(float(t), Reading(value, at=float(t)), None)
        observed.append(reading)
        if first_abort is None and tracker.must_abort(reading):
            first_abort = t
    assert [r.breach for r in observed] == [False, False, False, True, True, True, False, False]
    assert [r.breach_seconds for r in observed] == [0, 0, 0, 0, 1, 2, 0, 0]
    assert [r.value for r in observed] == values
    assert first_abort == 6
    assert [tracker.must_abort(r) for r in observed] == [False] * 5 + [True] + [False] * 2
    assert all(r.error == "" and r.control_value is None for r in observed)


def test_abort_after_is_real_time_not_a_count_of_ticks() -> None:
    """The guard passes each reading's wall-clock time. Readings a little early or late on
    their tick do not round up to whole ticks: the abort comes at the first reading at
    least `abort_after` after the breach began (the seed loop above keeps its exact ticks
    because its readings are exactly a second apart)."""
    tracker = BreachTracker(STEADY)
    times = [1.0, 2.02, 2.98, 4.01]  # the third is 20 ms short of 2 s into the breach
    readings = [tracker.observe(t, Reading(0.9, at=t), None) for t in times]
    assert [r.breach_seconds for r in readings] == pytest.approx([0, 1.02, 1.98, 3.01])
    assert [tracker.must_abort(r) for r in readings] == [False, False, False, True]


def test_a_tolerance_keeps_jittered_ticks_whole() -> None:
    """The guard gives its trackers a tenth of a tick of tolerance: a reading 20 ms short
    of 2 s on its tick still aborts there, one half a tick short does not."""
    tracker = BreachTracker(STEADY, tolerance=0.1)
    times = [1.0, 2.02, 2.98]
    readings = [tracker.observe(t, Reading(0.9, at=t), None) for t in times]
    assert [tracker.must_abort(r) for r in readings] == [False, False, True]
    early = BreachTracker(STEADY, tolerance=0.1)
    early.observe(1.0, Reading(0.9), None)
    assert not early.must_abort(early.observe(2.5, Reading(0.9), None))


def test_a_gap_between_readings_counts_as_breach_time() -> None:
    """A guard that could not read for a while (a stalled tick) does not restart the
    clock: the unobserved time inside a breach counts, never fly blind."""
    tracker = BreachTracker(STEADY)
    tracker.observe(1.0, Reading(0.9), None)
    after_gap = tracker.observe(4.5, Reading(None, "read timed out after 3s"), None)
    assert after_gap.breach_seconds == 3.5 and tracker.must_abort(after_gap)


def test_breach_started_is_remembered_and_cleared() -> None:
    tracker = BreachTracker(STEADY)
    tracker.observe(4.0, Reading(0.9), None)
    assert tracker.started == 4.0
    tracker.observe(5.0, Reading(0.9), None)
    assert tracker.started == 4.0
    tracker.observe(6.0, Reading(0.999), None)
    assert tracker.started is None


def test_value_at_min_is_not_a_breach() -> None:
    tracker = BreachTracker(STEADY)
    reading = tracker.observe(1.0, Reading(0.995), None)
    assert not reading.breach
    assert tracker.observe(2.0, Reading(0.9949), None).breach


def test_flapping_slo_never_aborts() -> None:
    tracker = BreachTracker(STEADY)
    pattern = [0.9, 0.9, 0.999] * 10
    readings = [tracker.observe(float(t), Reading(v), None) for t, v in enumerate(pattern)]
    assert sum(r.breach for r in readings) == 20
    assert max(r.breach_seconds for r in readings) == 1
    assert not any(tracker.must_abort(r) for r in readings)


def test_unreadable_reading_is_a_breach_with_its_error() -> None:
    tracker = BreachTracker(STEADY)
    first = tracker.observe(1.0, Reading(None, "boom"), None)
    assert first.breach
    assert first.value is None
    assert first.error == "boom"
    assert first.breach_seconds == 0
    tracker.observe(2.0, Reading(None, "boom"), None)
    third = tracker.observe(3.0, Reading(None, "boom"), None)
    assert third.breach_seconds == 2
    assert tracker.must_abort(third)


def test_value_with_an_error_is_a_breach() -> None:
    tracker = BreachTracker(STEADY)
    reading = tracker.observe(1.0, Reading(1.0, "partial read"), None)
    assert reading.breach and reading.error == "partial read"


def test_recovery_resets_breach_seconds() -> None:
    tracker = BreachTracker(STEADY)
    assert tracker.observe(1.0, Reading(0.9), None).breach_seconds == 0
    assert tracker.observe(2.0, Reading(0.9), None).breach_seconds == 1
    recovered = tracker.observe(3.0, Reading(0.999), None)
    assert (recovered.breach, recovered.breach_seconds) == (False, 0)
    again = tracker.observe(4.0, Reading(0.9), None)
    assert (again.breach, again.breach_seconds) == (True, 0)
    assert not tracker.must_abort(again)


# --- compare mode ------------------------------------------------------------------------


def test_compare_shared_dip_is_not_a_breach() -> None:
    tracker = BreachTracker(COMPARE)
    for t in range(1, 6):
        reading = tracker.observe(float(t), Reading(0.98), Reading(0.97))
        assert not reading.breach
        assert reading.breach_seconds == 0
        assert reading.value == 0.98 and reading.control_value == 0.97
        assert not tracker.must_abort(reading)


@pytest.mark.parametrize("control_value", [0.995, 0.999, 1.0])
def test_compare_faulted_below_control_fine_is_a_breach(control_value: float) -> None:
    tracker = BreachTracker(COMPARE)
    readings = [tracker.observe(float(t), Reading(0.98), Reading(control_value)) for t in (1, 2, 3)]
    assert all(r.breach for r in readings)
    assert [r.breach_seconds for r in readings] == [0, 1, 2]
    assert tracker.must_abort(readings[-1])
    assert readings[-1].control_value == control_value


def test_compare_unreadable_control_is_a_breach() -> None:
    tracker = BreachTracker(COMPARE)
    reading = tracker.observe(1.0, Reading(0.98), Reading(None, "payments-api-2: stats unreadable"))
    assert reading.breach
    assert reading.error == "payments-api-2: stats unreadable"
    assert reading.control_value is None


def test_compare_faulted_fine_is_not_a_breach_whatever_control() -> None:
    tracker = BreachTracker(COMPARE)
    assert not tracker.observe(1.0, Reading(0.999), Reading(None, "down")).breach
    assert not tracker.observe(2.0, Reading(0.999), Reading(0.5)).breach


def test_compare_faulted_unreadable_is_a_breach_even_if_control_dips() -> None:
    tracker = BreachTracker(COMPARE)
    reading = tracker.observe(1.0, Reading(None, "boom"), Reading(0.9))
    assert reading.breach and reading.error == "boom"


def test_compare_recovery_resets() -> None:
    tracker = BreachTracker(COMPARE)
    tracker.observe(1.0, Reading(0.98), Reading(0.999))
    assert tracker.observe(2.0, Reading(0.98), Reading(0.999)).breach_seconds == 1
    # The control group dips too: now it is background noise, and the breach ends.
    shared = tracker.observe(3.0, Reading(0.98), Reading(0.98))
    assert (shared.breach, shared.breach_seconds) == (False, 0)
    assert tracker.observe(4.0, Reading(0.98), Reading(0.999)).breach_seconds == 0
