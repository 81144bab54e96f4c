"""Kubernetes label selectors over sidecar labels: `k=v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k`, `!k`, joined by commas (AND). The empty selector matches everything.

Parsed once at the API edge into an immutable `Selector`; matching is a pure function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEY = r"(?:[a-z0-9A-Z.-]+/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


class SelectorError(ValueError):
    """The selector text is not valid; the message says which requirement and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # in | notin | exists | !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin (also true when absent)


@dataclass(frozen=True)
class Selector:
    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(text: str) -> Selector:
    return Selector(text, tuple(_parse_requirement(part) for part in _split(text)))


def _split(text: str) -> list[str]:
    """Split on commas that are not inside a value set's parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced ')'")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError("unbalanced '('")
    parts.append("".join(current))
    if len(parts) == 1 and not parts[0].strip():
        return []
    for part in parts:
        if not part.strip():
            raise SelectorError("empty requirement between commas")
    return [part.strip() for part in parts]


def _parse_requirement(part: str) -> Requirement:
    if match := _SET_RE.match(part):
        key, operator, values = match.groups()
        return Requirement(key, operator, frozenset(v.strip() for v in values.split(",")))
    if match := _EQ_RE.match(part):
        key, operator, value = match.groups()
        return Requirement(key, "notin" if operator == "!=" else "in", frozenset({value}))
    if match := _EXISTS_RE.match(part):
        negated, key = match.groups()
        return Requirement(key, "!exists" if negated else "exists")
    raise SelectorError(f"cannot parse requirement {part!r}")
