"""One experiment, several faults, without a sidecar: the request (`faults`), the
document the CLI reads, admission per part, the stored record, and the delivery ids."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.cli.document import DocumentError, read_injection_request
from faultplane.cli.tables import fault_summary
from faultplane.delivery.plane import Delivery
from faultplane.lifecycle.admission import Admission, Refused
from faultplane.lifecycle.records import injection_body, injection_from_record
from faultplane.model.injection import Injection, State
from faultplane.model.pattern import Burst
from faultplane.model.spec import InjectionSpec, injection_of, part_id
from faultplane.render.faults import FaultAssignment
from faultplane.store import StoredInjection
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import EXAMPLE
from tests.test_admission import MESH, PAYMENTS, SOUTH
from tests.test_admission import decide as decide_single
from tests.test_admission import spec as single_spec

SLOW_FRAUD = {
    "target": {"service": "payments-api", "selector": "", "max_pods": 4,
               "upstream": "fraud-scoring"},
    "fault": {"type": "latency", "fixed_ms": 200},
}  # fmt: skip
LEDGER_DOWN = {
    "target": {"service": "payments-api", "selector": "shard=south-1", "max_pods": 2,
               "upstream": "ledger"},
    "fault": {"type": "abort", "http_status": 503, "percentage": 10},
}  # fmt: skip

# A partition of the south shard from ledger (a partition needs an upstream and 100 %).
PARTITION = {
    "target": {"service": "payments-api", "selector": "shard=south-1", "max_pods": 2,
               "upstream": "ledger"},
    "fault": {"type": "partition"},
}  # fmt: skip
RAMP = {"kind": "ramp", "from_percentage": 5, "to_percentage": 50, "steps": 3}


def document(*parts: dict[str, Any], **top: Any) -> dict[str, Any]:
    """The issue's example with `faults` in place of its target and fault."""
    found = {k: v for k, v in EXAMPLE.items() if k not in ("target", "fault")}
    return {**found, "faults": list(parts), **top}


def request(doc: dict[str, Any]) -> pb.InjectionRequest:
    return json_format.ParseDict(doc, pb.InjectionRequest())


def spec(*parts: dict[str, Any]) -> InjectionSpec:
    return validate_request(request(document(*parts)), MESH, None)


def decide(wanted: InjectionSpec, injection_id: str = "inj-new", **given: Any) -> Admission:
    """Admission with every part on payments-api (its sidecars for each part)."""
    more = [PAYMENTS] * (len(wanted.parts) - 1)
    return decide_single(wanted, injection_id, more_sidecars=more, **given)


def live(wanted: InjectionSpec, injection_id: str) -> Injection:
    """An injection admitted before, still live."""
    return decide(wanted, injection_id).injection({})


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as refused:
        validate_request(request(doc), MESH, {EXAMPLE["steady_state"]["slo"]})
    return refused.value.problems


# -- the request ---------------------------------------------------------------------


def test_two_parts_validate_into_one_spec_whose_first_part_is_target_and_fault() -> None:
    two = spec(SLOW_FRAUD, LEDGER_DOWN)

    assert len(two.parts) == 2
    assert (two.parts[0].target, two.parts[0].fault) == (two.target, two.fault)
    assert two.parts[1].target.scope.upstream == "ledger"
    assert two.parts[1].target.max_pods == 2 and two.parts[1].fault.percentage == 10


def test_a_single_entry_faults_list_is_the_single_fault_request() -> None:
    classic = validate_request(request(dict(EXAMPLE)), MESH, None)
    listed = spec({"target": EXAMPLE["target"], "fault": EXAMPLE["fault"]})
    assert listed == classic


def test_target_and_fault_beside_faults_are_refused_naming_faults() -> None:
    both = document(SLOW_FRAUD, target=EXAMPLE["target"], fault=EXAMPLE["fault"])
    assert problems(both) == [("faults", "give target and fault, or faults, not both")]


def test_each_part_is_checked_with_its_index_in_the_path() -> None:
    no_cap = {**LEDGER_DOWN, "target": {**LEDGER_DOWN["target"], "max_pods": 0}}
    bad_status = {**SLOW_FRAUD, "fault": {"type": "abort", "http_status": 42}}
    found = dict(problems(document(bad_status, no_cap)))
    assert found["faults[1].target.max_pods"].startswith("required")
    assert "faults[0].fault.http_status" in found


def with_pattern(part: dict[str, Any], **pattern: Any) -> dict[str, Any]:
    return {**part, "fault": {**part["fault"], "pattern": pattern}}


def test_each_part_carries_its_own_pattern_and_one_without_stays_constant() -> None:
    bursty = with_pattern(LEDGER_DOWN, kind="burst", on_seconds=5, off_seconds=5)
    two = spec(SLOW_FRAUD, bursty)
    assert two.parts[0].fault.pattern is None
    assert two.parts[1].fault.pattern == Burst(5, 5)


@pytest.mark.parametrize(
    ("part", "field", "reason"),
    [
        ({**PARTITION, "fault": {"type": "partition", "pattern": RAMP}},
         "faults[1].fault.pattern.kind", "not ramp"),
        (with_pattern(LEDGER_DOWN, kind="burst", on_seconds=900, off_seconds=5),
         "faults[1].fault.pattern.on_seconds", "duration"),
        (with_pattern(LEDGER_DOWN, **{**RAMP, "steps": 0}), "faults[1].fault.pattern.steps",
         "between 1"),
        (with_pattern(LEDGER_DOWN, kind="random", tick_seconds=5),
         "faults[1].fault.pattern.on_probability", "required"),
    ],
    ids=["ramp-on-partition", "on-longer-than-duration", "ramp-steps-0", "random-incomplete"],
)  # fmt: skip
def test_a_bad_pattern_on_a_part_is_refused_naming_the_part(
    part: dict[str, Any], field: str, reason: str
) -> None:
    found = dict(problems(document(SLOW_FRAUD, part)))
    assert reason in found[field], found


def test_an_oversized_part_field_is_refused_before_parsing_naming_the_part() -> None:
    long = {**LEDGER_DOWN, "target": {**LEDGER_DOWN["target"], "selector": "x" * 600}}
    assert [p for p, _ in problems(document(SLOW_FRAUD, long))] == ["faults[1].target.selector"]


# -- the document the CLI reads ------------------------------------------------------


def test_a_yaml_document_with_faults_becomes_a_multi_fault_request(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "faults:\n"
        "  - target: {service: payments-api, selector: '', max_pods: 4, upstream: fraud-scoring}\n"
        "    fault: {type: latency, fixed_ms: 200}\n"
        "  - target: {service: payments-api, selector: shard=south-1, max_pods: 2,\n"
        "             upstream: ledger}\n"
        "    fault: {abort: {http_status: 503}, percentage: 10}\n"
        "duration_seconds: 5m\n"
        "steady_state: {slo: merchant-write-success, min: 0.99, abort_after: 30}\n"
        "hypothesis: payments degrade gracefully\n"
        "owner: sre@example\n"
    )  # fmt: skip
    read = read_injection_request(path)
    assert [p.target.upstream for p in read.faults] == ["fraud-scoring", "ledger"]
    assert read.faults[1].fault.abort.http_status == 503 and not read.HasField("target")
    assert fault_summary(read) == (
        "latency 200ms -> fraud-scoring + abort http 503 on 10% -> ledger"
    )


@pytest.mark.parametrize("name", ["held-bursty-fraud-ledger", "refuted-bursty-fraud-ledger"])
def test_the_bursty_example_experiments_validate_as_written(name: str) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "experiments" / f"{name}.yaml"
    read = read_injection_request(path)
    wanted = validate_request(read, MESH, {"merchant-write-success"})
    constant, bursty = wanted.parts
    assert constant.fault.pattern is None and constant.target.scope.upstream == "fraud-scoring"
    assert isinstance(bursty.fault.pattern, Burst) and bursty.target.scope.upstream == "ledger"
    assert "burst" in fault_summary(read).split(" + ")[1]


def test_a_document_names_every_problem_inside_faults(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    bad = document({"target": {"service": "payments-api", "max_pod": 2}, "fault": []})
    path.write_text(json.dumps(bad))
    with pytest.raises(DocumentError) as refused:
        read_injection_request(path)
    paths = [p for p, _ in refused.value.problems]
    assert paths == ["faults[0].target.max_pod", "faults[0].fault"]


def test_an_empty_faults_list_is_refused_naming_faults(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(document()))
    with pytest.raises(DocumentError) as refused:
        read_injection_request(path)
    assert refused.value.problems[0][0] == "faults"


# -- admission per part --------------------------------------------------------------


def test_admission_caps_each_part_and_gives_each_its_own_delivery_id() -> None:
    admission = decide(spec(SLOW_FRAUD, LEDGER_DOWN), "inj-x")

    first, second = admission.parts
    assert len(first.targets) == 4 and len(second.targets) == 2  # max_pods per part
    assert set(second.targets) <= set(SOUTH)
    assert (first.assignment_id, second.assignment_id) == ("inj-x", "inj-x.1")
    assert sorted(admission.targets) == sorted(first.targets)  # the union
    for node in second.targets:  # one sidecar, both faults, rendered together
        assert admission.assignments[node] == (first.fault, second.fault)
    injection = admission.injection({})
    assert injection.part_targets == (first.targets, second.targets)


def test_two_parts_on_one_sidecar_and_scope_are_refused() -> None:
    twice = {**LEDGER_DOWN, "fault": {"type": "latency", "fixed_ms": 5}}
    with pytest.raises(
        Refused, match=r"faults\[1\]\.target: sidecar .* also chosen by faults\[0\]"
    ):
        decide(spec(LEDGER_DOWN, twice))


def test_a_later_part_overlapping_a_live_injection_is_refused_naming_the_part() -> None:
    ledger_alone = single_spec(target={**LEDGER_DOWN["target"], "max_pods": 3},
                               fault=LEDGER_DOWN["fault"])  # fmt: skip
    with pytest.raises(Refused, match=r"faults\[1\]\.target: .* live injection inj-old"):
        decide(spec(SLOW_FRAUD, LEDGER_DOWN), injections=[live(ledger_alone, "inj-old")])


def test_a_live_multi_fault_injection_blocks_each_of_its_parts_scopes() -> None:
    running = live(spec(SLOW_FRAUD, LEDGER_DOWN), "inj-old")
    ledger_targets = running.part_targets[1]
    ledger_again = single_spec(target={**LEDGER_DOWN["target"], "max_pods": 3},
                               fault={"type": "latency", "fixed_ms": 5})  # fmt: skip
    with pytest.raises(Refused, match=f"sidecar ({'|'.join(ledger_targets)}) already has"):
        decide(ledger_again, injections=[running])


# -- stored and delivered ------------------------------------------------------------


def test_the_record_keeps_each_parts_targets_and_a_single_fault_record_is_unchanged() -> None:
    multi = live(spec(SLOW_FRAUD, LEDGER_DOWN), "inj-m")
    multi.document = document(SLOW_FRAUD, LEDGER_DOWN)
    body = injection_body(multi)
    stored = StoredInjection(
        multi.id, State.PENDING.value, "payments-api", multi.created_at, body, ()
    )
    back = injection_from_record(
        stored, [], lambda doc, _: validate_request(request(doc), MESH, None), strict=False
    )
    assert back.part_targets == multi.part_targets and back.spec == multi.spec
    assert "part_targets" not in injection_body(live(single_spec(), "inj-s"))


def test_part_ids_map_back_to_their_injection() -> None:
    assert [part_id("inj-a", i) for i in range(3)] == ["inj-a", "inj-a.1", "inj-a.2"]
    assert {injection_of(part_id("inj-a", i)) for i in range(3)} == {"inj-a"}


class _Plane:
    """Records the desired faults per sidecar; renders nothing."""

    arm_type = "rds"

    def __init__(self) -> None:
        self.faults: dict[str, list[str]] = {}

    def render(self, node: str, faults: Any) -> dict[str, Any]:
        return {}

    def set_faults(self, node: str, faults: Any, lease_until: float | None) -> dict[str, int]:
        self.faults[node] = [f.injection_id for f in faults]
        return {}


def test_dropping_and_releasing_an_injection_covers_every_part() -> None:
    async def scenario() -> None:
        plane = _Plane()
        delivery = Delivery(plane, ack_timeout=1.0)  # type: ignore[arg-type]
        two = spec(SLOW_FRAUD, LEDGER_DOWN)
        for i, part in enumerate(two.parts):
            fault = FaultAssignment(part_id("inj-a", i), part.fault, part.target.scope, True)
            delivery.reserve(["payments-api-1"], fault.injection_id, fault)
            delivery.place(["payments-api-1"], fault.injection_id, fault)
        other = FaultAssignment("inj-b", two.fault, two.target.scope, True)
        delivery.place(["payments-api-1"], "inj-b", other)
        delivery.lease("inj-a", asyncio.get_running_loop().time() + 60)

        delivery.drop("inj-a")

        assert plane.faults["payments-api-1"] == ["inj-b"]
        assert delivery.planned("payments-api-1") == {"inj-b": other}
        assert not delivery.leased("inj-a")

    asyncio.run(scenario())


def test_a_restored_multi_fault_injection_is_placed_part_by_part() -> None:
    injection = live(spec(SLOW_FRAUD, LEDGER_DOWN), "inj-r")
    assert isinstance(injection, Injection)
    assert [(key, nodes) for key, _, nodes in injection.parts()] == [
        ("inj-r", injection.part_targets[0]),
        ("inj-r.1", injection.part_targets[1]),
    ]
