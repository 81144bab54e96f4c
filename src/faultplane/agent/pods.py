"""The pods an agent hosts, from its pods file, as selection sees them.

A pod here is a network namespace with a name, a service and labels: the agent registers
them with the control server (node metadata), so targets, `max_pods` and selectors pick
among them exactly as among sidecars. YAML:

    pods:
      - name: app-1
        service: app
        labels: {zone: a}
        netns: fp-app-1
        stats_address: 127.0.0.1:9101   # optional: the app's metrics, for the guard
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$")
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class PodsError(ValueError):
    """A pods file that cannot be used, naming the field and the reason."""


@dataclass(frozen=True)
class Pod:
    name: str
    service: str
    netns: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # HOST:PORT of the pod's app metrics in Envoy's Prometheus form (the guard reads them).
    stats_address: str = ""

    def metadata(self) -> dict[str, Any]:
        """How the pod travels in the agent's node metadata (AgentPod's fields)."""
        return {
            "name": self.name,
            "service": self.service,
            "labels": dict(self.labels),
            "netns": self.netns,
            **({"stats_address": self.stats_address} if self.stats_address else {}),
        }


def load_pods(path: Path) -> list[Pod]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PodsError(f"{path}: {exc}") from exc
    return parse_pods(document, str(path))


def parse_pods(document: Any, source: str = "pods") -> list[Pod]:
    """The pods of a parsed document; PodsError names `pods[i].field` and why."""
    if not isinstance(document, dict) or not isinstance(document.get("pods"), list):
        raise PodsError(f"{source}: must be a mapping with a list `pods`")
    pods: list[Pod] = []
    for index, entry in enumerate(document["pods"]):
        path = f"{source}: pods[{index}]"
        if not isinstance(entry, dict):
            raise PodsError(f"{path}: must be a mapping")
        name = _text(entry, "name", _NAME, path)
        service = _text(entry, "service", _NAME, path)
        netns = _text(entry, "netns", _NETNS, path)
        labels = entry.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise PodsError(f"{path}.labels: must map text to text")
        stats = entry.get("stats_address") or ""
        if not isinstance(stats, str) or (stats and not _HOST_PORT.match(stats)):
            raise PodsError(f"{path}.stats_address: {stats!r} is not HOST:PORT")
        pods.append(Pod(name, service, netns, dict(labels), stats))
    for field_name in ("name", "netns"):
        values = [getattr(pod, field_name) for pod in pods]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise PodsError(f"{source}: pods[].{field_name} {duplicates[0]!r} appears twice")
    return pods


def _text(entry: dict[str, Any], name: str, pattern: re.Pattern[str], path: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise PodsError(f"{path}.{name}: {value!r} is not a name (1-63 of A-Z a-z 0-9 _ . -)")
    return value
