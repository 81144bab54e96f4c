"""Patterns and jitter, without a socket: the pure schedule of each pattern kind, what the
API refuses (naming the field), and that only the runtime layer depends on a pattern's
level (the armed routes and ECDS slots stay byte-identical)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.cli.document import DocumentError, request_from_document
from faultplane.cli.tables import fault_summary
from faultplane.faults.latency import Latency
from faultplane.lifecycle.pattern import MAX_RECORDED, SwitchLog, level_at, schedule
from faultplane.model.mesh import load_mesh
from faultplane.model.pattern import MAX_CHANGES, Burst, Ramp, Random
from faultplane.model.spec import FaultSpec, InjectionSpec, Scope
from faultplane.render.ecds import render_overlay
from faultplane.render.faults import FaultAssignment, render_faults, runtime_keys, slot_configs
from faultplane.render.resources import sidecar_resources
from faultplane.xds import types
from tests.helpers import EXAMPLE, LIFECYCLE_STEADY_STATE, injection_request

ROOT = Path(__file__).resolve().parent.parent
MESH = load_mesh(ROOT / "envoy-configs" / "mesh.yaml")
SLOS = {"merchant-write-success"}
LATENCY = {"type": "latency", "fixed_ms": 200}


def spec_of(fault: dict[str, Any], duration: float = 60) -> InjectionSpec:
    request = injection_request(fault=fault, duration_seconds=duration)
    return validate_request(request, MESH, SLOS)


def problems_of(fault: dict[str, Any], duration: float = 60) -> dict[str, str]:
    request = injection_request(fault=fault, duration_seconds=duration)
    with pytest.raises(InvalidRequest) as info:
        validate_request(request, MESH, SLOS)
    return dict(info.value.problems)


# -- the pure schedules -----------------------------------------------------------------


def test_burst_is_on_then_off_and_changes_at_each_phase_edge() -> None:
    burst = Burst(on_seconds=5, off_seconds=25)
    assert [burst.percentage_at(t, 40, 60) for t in (0, 4.9, 5, 29.9, 30, 35)] == [
        40, 40, 0, 0, 40, 0,
    ]  # fmt: skip
    assert burst.change_points(60) == [0, 5, 30, 35]
    assert burst.change_points(32) == [0, 5, 30]


def test_ramp_steps_evenly_over_the_duration_from_one_percentage_to_the_other() -> None:
    ramp = Ramp(from_percentage=5, to_percentage=50, steps=5)
    assert ramp.change_points(100) == [0, 20, 40, 60, 80]
    levels = [ramp.percentage_at(t, 100, 100) for t in (0, 19.9, 20, 50, 99.9, 100)]
    assert levels == [5, 5, 16.25, 27.5, 50, 50]


def test_random_is_a_pure_function_of_seed_and_tick() -> None:
    one, same, other = Random(0.2, 5, seed=7), Random(0.2, 5, seed=7), Random(0.2, 5, seed=8)
    ticks = [one.is_on_tick(i) for i in range(400)]
    assert ticks == [same.is_on_tick(i) for i in range(400)]
    assert ticks != [other.is_on_tick(i) for i in range(400)]
    assert 0.1 < sum(ticks) / len(ticks) < 0.3  # on_probability 0.2, 400 draws
    assert one.percentage_at(12.0, 30, 2000) == (30 if ticks[2] else 0)
    # A change point exactly where consecutive ticks differ, the first always.
    points = one.change_points(2000)
    expected = [0.0] + [i * 5.0 for i in range(1, 400) if ticks[i] != ticks[i - 1]]
    assert points == expected


def test_schedule_reads_each_level_mid_phase_as_a_share_of_the_fault() -> None:
    spec = spec_of({**LATENCY, "percentage": 50,
                    "pattern": {"kind": "ramp", "from_percentage": 10, "to_percentage": 40,
                                "steps": 4}}, duration=40)  # fmt: skip
    assert schedule(spec.fault, 40) == [(0, 0.2), (10, 0.4), (20, 0.6), (30, 0.8)]
    assert level_at(spec.fault, 0.0, 40) == pytest.approx(0.2)  # the level switched on
    burst = spec_of({**LATENCY, "pattern": {"kind": "burst", "on_seconds": 2, "off_seconds": 3}})
    assert schedule(burst.fault, 60)[:3] == [(0, 1.0), (2, 0.0), (5, 1.0)]
    assert schedule(FaultSpec(Latency(10)), 60) == []  # no pattern: no driver, no pushes
    assert level_at(FaultSpec(Latency(10)), 3.0, 10) == 1.0  # no pattern: always whole


# -- the API edge -------------------------------------------------------------------------


def test_each_pattern_kind_is_accepted_on_every_fault_kind() -> None:
    for fault in (LATENCY, {"type": "abort", "http_status": 503}, {"bandwidth": {"kbps": 8}}):
        spec = spec_of({**fault, "pattern": {"kind": "random", "on_probability": 0.5,
                                             "tick_seconds": 2, "seed": 3}})  # fmt: skip
        assert spec.fault.pattern == Random(0.5, 2, 3)


@pytest.mark.parametrize(
    ("pattern", "duration", "field", "reason"),
    [
        ({"kind": "burst", "on_seconds": 90, "off_seconds": 5}, 60, "on_seconds", "duration"),
        ({"kind": "burst", "on_seconds": 5}, 60, "off_seconds", "required"),
        ({"kind": "burst", "on_seconds": 0.5, "off_seconds": 5}, 60, "on_seconds", "1 second"),
        ({"kind": "ramp", "from_percentage": 5, "to_percentage": 50, "steps": 0}, 60, "steps",
         "between 1"),
        ({"kind": "ramp", "from_percentage": 5, "to_percentage": 150, "steps": 3}, 60,
         "to_percentage", "between 0 and 100"),
        ({"kind": "random", "on_probability": 0, "tick_seconds": 5}, 60, "on_probability",
         "greater than 0"),
        ({"kind": "random", "on_probability": 1.5, "tick_seconds": 5}, 60, "on_probability",
         "at most 1"),
        ({"kind": "random", "on_probability": 0.2, "tick_seconds": 0.2}, 60, "tick_seconds",
         "at least 1"),
        ({"kind": "random", "on_probability": 0.2, "tick_seconds": 5, "steps": 2}, 60, "steps",
         "not a field of a random pattern"),
        ({"kind": "wave"}, 60, "kind", "burst, ramp, random"),
    ],
)  # fmt: skip
def test_bad_patterns_are_refused_naming_the_field(
    pattern: dict[str, Any], duration: float, field: str, reason: str
) -> None:
    problems = problems_of({**LATENCY, "pattern": pattern}, duration)
    assert reason in problems[f"fault.pattern.{field}"]


def test_a_pattern_switching_too_often_is_refused() -> None:
    pattern = {"kind": "burst", "on_seconds": 1, "off_seconds": 1}
    problems = problems_of({**LATENCY, "pattern": pattern}, duration=MAX_CHANGES * 2)
    assert "would switch" in problems["fault.pattern"]


def test_document_carries_the_pattern_and_names_its_unknown_fields() -> None:
    burst = {"kind": "burst", "on_seconds": 5, "off_seconds": 25}
    fault = {**LATENCY, "jitter_ms": 20, "pattern": burst}
    document = {**EXAMPLE, "steady_state": LIFECYCLE_STEADY_STATE, "fault": fault}
    request = request_from_document(json.loads(json.dumps(document)), "doc.json")
    assert request.fault.pattern.kind == "burst" and request.fault.pattern.off_seconds == 25
    assert request.fault.jitter_ms == 20
    spec = validate_request(request, MESH, SLOS)
    assert spec.fault.pattern == Burst(5, 25) and spec.fault.kind == Latency(200, jitter_ms=20)
    document["fault"]["pattern"]["on_secs"] = 3
    with pytest.raises(DocumentError) as info:
        request_from_document(document, "doc.json")
    assert info.value.problems[0][0] == "fault.pattern.on_secs"


# -- jitter ---------------------------------------------------------------------------------


def test_jitter_chains_a_base_slot_and_two_half_share_slots_into_four_even_delays() -> None:
    spec = spec_of({"type": "latency", "fixed_ms": 200, "jitter_ms": 30, "percentage": 80})
    slots = slot_configs("inj", spec.fault)
    delays = [s.config.delay.fixed_delay.ToMilliseconds() for s in slots]
    assert delays == [170, 20, 40]
    assert [next(iter(s.runtime.values())) for s in slots] == [80, 40, 40]
    # With both halves independent: 170, 190, 210, 230 ms, equally likely.
    totals = sorted(delays[0] + a * delays[1] + b * delays[2] for a in (0, 1) for b in (0, 1))
    assert totals == [170, 190, 210, 230]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"type": "latency", "p50_ms": 200, "p99_ms": 400, "jitter_ms": 10}, "not both"),
        ({"type": "latency", "fixed_ms": 20, "jitter_ms": 20}, "shortest delay"),
        ({"type": "latency", "fixed_ms": 20, "jitter_ms": 1}, "between 2 ms"),
    ],
)
def test_bad_jitter_is_refused_naming_the_field(fault: dict[str, Any], reason: str) -> None:
    assert reason in problems_of(fault)["fault.jitter_ms"]


def test_jitter_needing_more_slots_than_a_sidecar_has_is_refused_at_rendering() -> None:
    spec = spec_of({"type": "latency", "fixed_ms": 200, "jitter_ms": 30})
    fault = FaultAssignment("inj", spec.fault, spec.target.scope, True)
    with pytest.raises(ValueError, match="no free"):
        render_overlay([fault], fault_slots=2)


# -- only the runtime layer depends on the level ------------------------------------------


@pytest.mark.parametrize("scope", [Scope(), Scope(upstream="fraud-scoring")])
def test_levels_change_only_the_runtime_layer(scope: Scope) -> None:
    spec = spec_of({"type": "latency", "p50_ms": 200, "p99_ms": 500, "percentage": 40,
                    "pattern": {"kind": "burst", "on_seconds": 5, "off_seconds": 5}})  # fmt: skip
    pod = MESH.pod("payments-api-1")
    assert pod is not None
    base = sidecar_resources(MESH, pod)
    rendered = {}
    for level in (1.0, 0.5, 0.0):
        fault = FaultAssignment("inj", spec.fault, scope, True, level)
        rendered[level] = (render_faults(base, [fault], 4), render_overlay([fault], 4))
    for type_url, which in ((types.ROUTE, 0), (types.EXTENSION_CONFIG, 1)):
        armed = {
            level: {n: m.SerializeToString(deterministic=True)
                    for n, m in pair[which][type_url].items()}
            for level, pair in rendered.items()
        }  # fmt: skip
        assert armed[1.0] == armed[0.5] == armed[0.0]
    keys = {level: runtime_keys(pair[0][types.RUNTIME]) for level, pair in rendered.items()}
    assert sorted(keys[1.0].values()) == pytest.approx([1.6, 40])
    assert sorted(keys[0.5].values()) == pytest.approx([0.8, 20])
    assert set(keys[0.0].values()) == {0} and keys[0.0].keys() == keys[1.0].keys()


# -- evidence in the history, and the tables ---------------------------------------------


def test_switches_past_the_bound_are_summarised_once() -> None:
    spec = spec_of({**LATENCY, "percentage": 40,
                    "pattern": {"kind": "burst", "on_seconds": 1, "off_seconds": 1}})  # fmt: skip
    log = SwitchLog(spec.fault)
    reasons = [log.switched(i % 2, at=1_000_000.0 + i) for i in range(120)]
    recorded = [r for r in reasons if r is not None]
    assert len(recorded) == MAX_RECORDED
    assert recorded[0] == "burst: off (switch 1)" and recorded[1] == "burst: on at 40% (switch 2)"
    assert recorded[-1].endswith("further switches summarised at the end")
    assert log.summary() == (
        "burst: 120 switches, last on at 13:48:39Z, last off at 13:48:38Z"
    )  # 1e6 + 119 s and 1e6 + 118 s, UTC


def test_a_part_of_a_multi_fault_experiment_is_named_in_its_switches_and_summary() -> None:
    spec = spec_of({**LATENCY, "pattern": {"kind": "burst", "on_seconds": 1, "off_seconds": 1}})
    log = SwitchLog(spec.fault, "faults[1] ")
    assert log.switched(0.0, at=1_000_000.0) == "faults[1] burst: off (switch 1)"
    for i in range(MAX_RECORDED):
        log.switched((i + 1) % 2, at=1_000_001.0 + i)
    summary = log.summary()
    assert summary is not None and summary.startswith("faults[1] burst: 51 switches")


def test_a_short_run_needs_no_summary() -> None:
    ramp = {"kind": "ramp", "from_percentage": 5, "to_percentage": 50, "steps": 5}
    log = SwitchLog(spec_of({**LATENCY, "pattern": ramp}).fault)
    assert log.switched(0.5, at=0.0) == "ramp: on at 50% (switch 1)"
    assert log.summary() is None


def test_tables_describe_the_pattern_and_the_jitter() -> None:
    request = injection_request(fault={"type": "latency", "fixed_ms": 200, "jitter_ms": 20,
                                       "percentage": 30,
                                       "pattern": {"kind": "random", "on_probability": 0.2,
                                                   "tick_seconds": 5, "seed": 7}})  # fmt: skip
    assert fault_summary(request) == (
        "latency 200ms ±20ms on 30%, random 0.2 per 5s tick (seed 7) -> fraud-scoring"
    )
