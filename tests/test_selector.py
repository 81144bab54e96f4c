"""Kubernetes label selectors: every operator, AND, whitespace, and parse errors."""

from __future__ import annotations

import re

import pytest

from faultplane.model.selector import Requirement, Selector, SelectorError, parse_selector

SOUTH = {"shard": "south-1", "tier": "critical"}
NORTH = {"shard": "north-1", "tier": "critical"}
BARE = {"shard": "east-1"}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        # k=v and k==v
        ("shard=south-1", SOUTH, True),
        ("shard=south-1", NORTH, False),
        ("shard=south-1", {}, False),
        ("shard==south-1", SOUTH, True),
        ("shard==south-1", NORTH, False),
        # k!=v: true when the key is absent
        ("shard!=south-1", SOUTH, False),
        ("shard!=south-1", NORTH, True),
        ("tier!=critical", BARE, True),
        ("tier!=critical", {}, True),
        # k in (a,b)
        ("shard in (south-1,north-1)", SOUTH, True),
        ("shard in (south-1,north-1)", NORTH, True),
        ("shard in (south-1,north-1)", BARE, False),
        ("tier in (critical)", BARE, False),
        # k notin (a,b): true when the key is absent
        ("shard notin (south-1,north-1)", SOUTH, False),
        ("shard notin (south-1,north-1)", NORTH, False),
        ("shard notin (south-1,north-1)", BARE, True),
        ("tier notin (critical)", BARE, True),
        ("tier notin (critical)", {}, True),
        # k (exists) and !k (does not exist)
        ("tier", SOUTH, True),
        ("tier", BARE, False),
        ("!tier", SOUTH, False),
        ("!tier", BARE, True),
        ("!tier", {}, True),
        # prefixed keys
        ("app.kubernetes.io/name=pay", {"app.kubernetes.io/name": "pay"}, True),
        ("app.kubernetes.io/name=pay", {"name": "pay"}, False),
    ],
)
def test_operators(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "key", "operator", "values"),
    [
        ("k=v", "k", "in", {"v"}),
        ("k==v", "k", "in", {"v"}),
        ("k!=v", "k", "notin", {"v"}),
        ("k in (a,b)", "k", "in", {"a", "b"}),
        ("k notin (a,b)", "k", "notin", {"a", "b"}),
        ("k", "k", "exists", set()),
        ("!k", "k", "!exists", set()),
    ],
)
def test_parsed_requirement(text: str, key: str, operator: str, values: set[str]) -> None:
    selector = parse_selector(text)
    assert selector.text == text
    assert selector.requirements == (Requirement(key, operator, frozenset(values)),)


def test_comma_is_and() -> None:
    selector = parse_selector("shard=south-1,tier")
    assert len(selector.requirements) == 2
    assert selector.matches(SOUTH)
    assert not selector.matches(NORTH)  # second requirement holds, first does not
    assert not selector.matches({"shard": "south-1"})  # first holds, second does not


def test_comma_inside_value_set_does_not_split() -> None:
    selector = parse_selector("shard in (south-1,north-1),tier=critical")
    assert len(selector.requirements) == 2
    assert selector.requirements[0].values == frozenset({"south-1", "north-1"})
    assert selector.matches(NORTH)
    assert not selector.matches(BARE)


def test_whitespace_is_ignored() -> None:
    spaced = parse_selector("  shard = south-1 ,  tier in ( critical , low ) , ! gone  ")
    tight = parse_selector("shard=south-1,tier in (critical,low),!gone")
    assert spaced.requirements == tight.requirements
    assert spaced.matches(SOUTH)
    assert not spaced.matches({**SOUTH, "gone": "x"})
    assert not spaced.matches(NORTH)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_selector_matches_everything(text: str) -> None:
    selector = parse_selector(text)
    assert selector == Selector(text, ())
    for labels in (SOUTH, NORTH, BARE, {}):
        assert selector.matches(labels)


def test_value_comparison_is_exact() -> None:
    assert not parse_selector("shard=south").matches(SOUTH)
    assert not parse_selector("shard=South-1").matches(SOUTH)
    assert not parse_selector("shard in (south)").matches(SOUTH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shard in (a,b", "unbalanced '('"),
        ("shard in a,b)", "unbalanced ')'"),
        ("shard in (a,b)),x", "unbalanced ')'"),
        ("a=b,,c=d", "empty requirement"),
        ("a=b,", "empty requirement"),
        (",a=b", "empty requirement"),
        ("a=b, ,c=d", "empty requirement"),
        ("=x", "cannot parse"),
        ("a in b", "cannot parse"),
        ("a notin b", "cannot parse"),
        ("a in ((b))", "cannot parse"),
        ("a=b=c", "cannot parse"),
        ("a b", "cannot parse"),
        ("!", "cannot parse"),
        ("a=b,!=c", "cannot parse"),
        ("a>1", "cannot parse"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(message)):
        parse_selector(text)


def test_selector_error_is_a_value_error_naming_the_requirement() -> None:
    with pytest.raises(ValueError, match="'a in b'"):
        parse_selector("shard=south-1,a in b")
