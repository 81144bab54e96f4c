"""select_targets: every match, capped at max_pods by a deterministic per-injection rank."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from faultplane.model.selector import parse_selector
from faultplane.model.spec import Scope, TargetSpec
from faultplane.model.targets import select_targets

# Ten south-1 sidecars (listed out of order) and three others.
SOUTH = [(f"payments-api-{i}", {"shard": "south-1", "tier": "critical"}) for i in range(10)]
OTHERS = [
    ("payments-api-north", {"shard": "north-1", "tier": "critical"}),
    ("payments-api-bare", {}),
    ("fraud-scoring-1", {"shard": "east-1"}),
]
SIDECARS: list[tuple[str, Mapping[str, str]]] = [*reversed(SOUTH[5:]), *OTHERS, *SOUTH[:5]]
SOUTH_IDS = tuple(sorted(node for node, _ in SOUTH))


def target(selector: str = "shard=south-1", max_pods: int = 3) -> TargetSpec:
    return TargetSpec("payments-api", parse_selector(selector), max_pods, Scope())


def test_matched_is_every_selector_match_sorted() -> None:
    matched, _ = select_targets(target(), "inj-1", SIDECARS)
    assert matched == SOUTH_IDS
    assert list(matched) == sorted(matched)


def test_matched_follows_the_selector() -> None:
    matched, chosen = select_targets(target("shard!=south-1", 10), "inj-1", SIDECARS)
    assert matched == ("fraud-scoring-1", "payments-api-bare", "payments-api-north")
    assert sorted(chosen) == list(matched)


def test_empty_selector_matches_every_sidecar() -> None:
    matched, chosen = select_targets(target("", 100), "inj-1", SIDECARS)
    assert matched == tuple(sorted(node for node, _ in SIDECARS))
    assert len(chosen) == len(SIDECARS)


@pytest.mark.parametrize("max_pods", [1, 3, 9, 10, 11, 100])
def test_chosen_is_capped_subset_of_matched(max_pods: int) -> None:
    matched, chosen = select_targets(target(max_pods=max_pods), "inj-1", SIDECARS)
    assert len(chosen) == min(max_pods, len(matched))
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(matched)


def test_deterministic_for_the_same_id() -> None:
    first = select_targets(target(), "inj-42", SIDECARS)
    again = select_targets(target(), "inj-42", list(reversed(SIDECARS)))
    assert first == again


def test_accepts_any_iterable_of_sidecars() -> None:
    expected = select_targets(target(), "inj-7", SIDECARS)
    assert select_targets(target(), "inj-7", iter(SIDECARS)) == expected


def test_larger_cap_extends_the_smaller_choice() -> None:
    """Rank order is a property of the injection: raising max_pods only adds pods."""
    _, three = select_targets(target(max_pods=3), "inj-9", SIDECARS)
    _, five = select_targets(target(max_pods=5), "inj-9", SIDECARS)
    assert five[:3] == three


def test_different_ids_spread_over_different_pods() -> None:
    subsets = {frozenset(select_targets(target(), f"inj-{i}", SIDECARS)[1]) for i in range(20)}
    assert len(subsets) >= 2
    # Not always the first pods in sorted order.
    assert subsets != {frozenset(SOUTH_IDS[:3])}
    chosen_anywhere = set().union(*subsets)
    assert len(chosen_anywhere) > 3


def test_empty_when_nothing_matches() -> None:
    assert select_targets(target("shard=west-9"), "inj-1", SIDECARS) == ((), ())


def test_empty_when_there_are_no_sidecars() -> None:
    assert select_targets(target(), "inj-1", []) == ((), ())
