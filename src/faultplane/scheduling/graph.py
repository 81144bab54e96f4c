"""Which services are on the same request path: a service and its dependencies, transitively.

Two experiments on the same path confound each other's verdict (an abort in a dependency
shows up as errors in its callers), so the dependency rule asks `on_same_path`. The
graph comes from the mesh model (or, in overlay mode, a declared graph file); here it is
only edges. Reachability is computed once, when the graph is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from faultplane.scheduling.errors import ScheduleError


@dataclass(frozen=True)
class DependencyGraph:
    """`calls[a]` = the services a calls directly."""

    calls: Mapping[str, frozenset[str]] = field(default_factory=dict)
    _reach: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reach: dict[str, frozenset[str]] = {}
        for start in self.calls:
            seen: set[str] = set()
            todo = list(self.calls[start])
            while todo:
                service = todo.pop()
                if service not in seen:
                    seen.add(service)
                    todo.extend(self.calls.get(service, ()))
            seen.discard(start)
            reach[start] = frozenset(seen)
        object.__setattr__(self, "_reach", reach)

    @classmethod
    def of(cls, edges: Iterable[tuple[str, str]]) -> DependencyGraph:
        """From (caller, callee) pairs."""
        calls: dict[str, set[str]] = {}
        for caller, callee in edges:
            calls.setdefault(caller, set()).add(callee)
        return cls({k: frozenset(v) for k, v in calls.items()})

    def depends_on(self, caller: str, callee: str) -> bool:
        """Does a request to `caller` (transitively) reach `callee`?"""
        return callee in self._reach.get(caller, frozenset())

    def on_same_path(self, a: str, b: str) -> bool:
        """Is one of two distinct services a (transitive) dependency of the other?"""
        return a != b and (self.depends_on(a, b) or self.depends_on(b, a))

    def path_pair(self, ours: Iterable[str], theirs: Iterable[str]) -> tuple[str, str] | None:
        """The first (ours, theirs) pair of services on the same path, if any."""
        others = sorted(theirs)
        for a in sorted(ours):
            for b in others:
                if self.on_same_path(a, b):
                    return a, b
        return None


def parse_graph(data: object, where: str = "dependencies") -> DependencyGraph:
    """`{service: [services it calls], ...}` (a declared graph for overlay mode, where no
    mesh file says who calls whom); a file may also nest it under `dependencies`."""
    if isinstance(data, Mapping) and set(data) == {"dependencies"}:
        data = data["dependencies"]
    if not isinstance(data, Mapping):
        raise ScheduleError(where, "expected a mapping of service -> list of services it calls")
    calls: dict[str, frozenset[str]] = {}
    for service, callees in data.items():
        if not isinstance(service, str) or not service:
            raise ScheduleError(where, f"a service name must be text, not {service!r}")
        if not isinstance(callees, list) or not all(isinstance(c, str) and c for c in callees):
            raise ScheduleError(f"{where}.{service}", "expected a list of service names")
        calls[service] = frozenset(callees)
    return DependencyGraph(calls)
