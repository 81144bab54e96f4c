"""The SLO catalogue (`faultplane serve --slos FILE`): named steady-state measures.

Every SLO is a ratio of good events in [0, 1] over a rolling window, so that an
injection's `steady_state.min` always reads "at least this share was good":
- `success_ratio`: requests that did not end in 5xx / all requests;
- `latency_under`: requests answered within `threshold_ms` / all requests (a latency SLO
  such as "p99 under 300 ms" is `latency_under` 300 ms with min 0.99).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("success_ratio", "latency_under")
SOURCES = ("envoy", "prometheus")
LISTENERS = ("ingress", "egress")


class CatalogueError(ValueError):
    """The SLO file is unusable; the message names the SLO and field."""


@dataclass(frozen=True)
class SloDef:
    name: str
    service: str
    kind: str = "success_ratio"
    source: str = "envoy"
    # Which side of the sidecar: ingress = requests into the service.
    listener: str = "ingress"
    # The HCM stat prefixes to read, a regex matched in full (e.g. Istio's `inbound_.*`);
    # None: exactly `listener` (the prefixes of faultplane's own mesh).
    stat_prefix: str | None = None
    window_seconds: float = 60.0
    threshold_ms: float | None = None
    # Prometheus only: PromQL overriding the generated query; `$pods` (a regex of pod
    # names) and `$window` (e.g. 60s) are substituted.
    query: str | None = None
    description: str = ""


def load_catalogue(path: str | Path, services: Mapping[str, object] | None) -> dict[str, SloDef]:
    """`services` None (overlay mode: no mesh file) accepts any service name."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot read SLO catalogue: {exc}") from exc
    try:
        return parse_catalogue(doc, services)
    except CatalogueError as exc:
        raise CatalogueError(f"{path}: {exc}") from exc


def parse_catalogue(doc: Any, services: Mapping[str, object] | None) -> dict[str, SloDef]:
    if not isinstance(doc, dict) or not isinstance(doc.get("slos"), dict) or not doc["slos"]:
        raise CatalogueError("slos: a mapping of SLO name to definition is required")
    return {name: _parse_slo(name, body, services) for name, body in doc["slos"].items()}


def _parse_slo(name: Any, body: Any, services: Mapping[str, object] | None) -> SloDef:
    where = f"slos.{name}"
    if not isinstance(name, str) or not name:
        raise CatalogueError(f"{where}: the name must be a non-empty string")
    if not isinstance(body, dict):
        raise CatalogueError(f"{where}: must be a mapping")
    unknown = set(body) - {
        "service", "kind", "source", "listener", "stat_prefix", "window_seconds",
        "threshold_ms", "query", "description",
    }  # fmt: skip
    if unknown:
        raise CatalogueError(f"{where}: unknown field(s) {sorted(unknown)}")
    service = body.get("service")
    if not isinstance(service, str) or not service:
        raise CatalogueError(f"{where}.service: required, a service name (got {service!r})")
    if services is not None and service not in services:
        raise CatalogueError(f"{where}.service: unknown service {service!r}")
    kind = body.get("kind", "success_ratio")
    _one_of(kind, KINDS, f"{where}.kind")
    source = body.get("source", "envoy")
    _one_of(source, SOURCES, f"{where}.source")
    listener = body.get("listener", "ingress")
    _one_of(listener, LISTENERS, f"{where}.listener")
    window = body.get("window_seconds", 60)
    if not isinstance(window, int | float) or isinstance(window, bool) or not 1 <= window <= 86400:
        raise CatalogueError(f"{where}.window_seconds: must be a number of seconds, 1 to 86400")
    threshold = body.get("threshold_ms")
    if kind == "latency_under":
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not threshold > 0
        ):
            raise CatalogueError(f"{where}.threshold_ms: required for latency_under, > 0")
    elif threshold is not None:
        raise CatalogueError(f"{where}.threshold_ms: only for latency_under")
    stat_prefix = body.get("stat_prefix")
    if stat_prefix is not None:
        _check_regex(stat_prefix, source, f"{where}.stat_prefix")
    query = body.get("query")
    if query is not None and (source != "prometheus" or not isinstance(query, str)):
        raise CatalogueError(f"{where}.query: a PromQL string, only with source prometheus")
    return SloDef(
        name=name,
        service=service,
        kind=kind,
        source=source,
        listener=listener,
        stat_prefix=stat_prefix,
        window_seconds=float(window),
        threshold_ms=float(threshold) if threshold is not None else None,
        query=query,
        description=str(body.get("description", "")),
    )


def _check_regex(value: Any, source: str, where: str) -> None:
    if source != "envoy" or not isinstance(value, str) or not 0 < len(value) <= 256:
        raise CatalogueError(f"{where}: a regex of at most 256 characters, only with source envoy")
    try:
        re.compile(value)
    except re.error as exc:
        raise CatalogueError(f"{where}: not a valid regex ({exc})") from None


def _one_of(value: Any, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise CatalogueError(f"{where}: must be one of {', '.join(allowed)} (got {value!r})")
