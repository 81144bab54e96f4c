"""The mesh model: services, their pods and who calls whom, loaded from mesh.yaml.

The model is the control server's service registry. Everything it serves to a sidecar is
a function of this model, so it is validated completely at start-up: a mistake here would
otherwise surface as a half-configured Envoy minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

PORT_NAMES = ("app", "ingress", "egress", "admin")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class MeshError(ValueError):
    """mesh.yaml is not a usable mesh; the message names the offending field."""


@dataclass(frozen=True)
class PodPorts:
    app: int
    ingress: int
    egress: int
    admin: int

    def items(self) -> Iterator[tuple[str, int]]:
        for name in PORT_NAMES:
            yield name, getattr(self, name)


@dataclass(frozen=True)
class Pod:
    name: str
    service: str
    labels: Mapping[str, str]
    ports: PodPorts
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class Service:
    name: str
    dependencies: tuple[str, ...]
    pods: tuple[Pod, ...]


@dataclass(frozen=True)
class LoadSpec:
    service: str
    method: str = "POST"
    path: str = "/merchant-write"
    rate_per_second: float = 20.0


@dataclass(frozen=True)
class ControlPorts:
    xds_port: int = 18000
    api_port: int = 18001
    metrics_port: int = 18002


@dataclass(frozen=True)
class Mesh:
    services: Mapping[str, Service]
    load: LoadSpec | None = None
    control: ControlPorts = field(default_factory=ControlPorts)

    @cached_property
    def pods(self) -> tuple[Pod, ...]:
        return tuple(pod for service in self.services.values() for pod in service.pods)

    @cached_property
    def _pods_by_name(self) -> dict[str, Pod]:
        # Every new ADS stream looks its node up: a scan would make a connect storm of N
        # sidecars quadratic.
        return {pod.name: pod for pod in self.pods}

    def pod(self, name: str) -> Pod | None:
        return self._pods_by_name.get(name)

    def with_ports(self, allocate: Callable[[], int]) -> Mesh:
        """A copy whose every pod and control port comes from `allocate` (free ports)."""
        services = {
            name: replace(
                service,
                pods=tuple(
                    replace(pod, ports=PodPorts(*(allocate() for _ in PORT_NAMES)))
                    for pod in service.pods
                ),
            )
            for name, service in self.services.items()
        }
        control = ControlPorts(allocate(), allocate(), allocate())
        return replace(self, services=services, control=control)

    def to_dict(self) -> dict[str, Any]:
        """The mesh.yaml form of this model; `parse_mesh(m.to_dict()) == m`."""
        doc: dict[str, Any] = {
            "services": {
                service.name: {
                    "dependencies": list(service.dependencies),
                    "pods": [
                        {
                            "name": pod.name,
                            "labels": dict(pod.labels),
                            "ports": dict(pod.ports.items()),
                        }
                        for pod in service.pods
                    ],
                }
                for service in self.services.values()
            },
            "control": {
                "xds_port": self.control.xds_port,
                "api_port": self.control.api_port,
                "metrics_port": self.control.metrics_port,
            },
        }
        if self.load is not None:
            doc["load"] = {
                "service": self.load.service,
                "method": self.load.method,
                "path": self.load.path,
                "rate_per_second": self.load.rate_per_second,
            }
        return doc


def load_mesh(path: str | Path) -> Mesh:
    """Read and validate a mesh file; raises MeshError naming the file and the problem."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise MeshError(f"{path}: cannot read mesh file: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MeshError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_mesh(doc)
    except MeshError as exc:
        raise MeshError(f"{path}: {exc}") from exc


def parse_mesh(doc: Any) -> Mesh:
    if not isinstance(doc, dict):
        raise MeshError("the mesh must be a mapping with a 'services' key")
    services_doc = _mapping(doc.get("services"), "services")
    if not services_doc:
        raise MeshError("services: at least one service is required")
    services = {name: _parse_service(name, body) for name, body in services_doc.items()}
    _check_dependencies(services)
    control = _parse_control(doc.get("control"))
    _check_ports(services, control)
    load = _parse_load(doc.get("load"), services)
    return Mesh(services=services, load=load, control=control)


def _parse_service(name: Any, body: Any) -> Service:
    where = f"services.{name}"
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise MeshError(f"{where}: service name must be a DNS label (lowercase, digits, '-')")
    body = _mapping(body, where)
    deps = body.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise MeshError(f"{where}.dependencies: must be a list of service names")
    if len(set(deps)) != len(deps):
        raise MeshError(f"{where}.dependencies: lists a service twice")
    pods_doc = body.get("pods")
    if not isinstance(pods_doc, list) or not pods_doc:
        raise MeshError(f"{where}.pods: at least one pod is required")
    pods = tuple(_parse_pod(name, i, pod) for i, pod in enumerate(pods_doc))
    return Service(name=name, dependencies=tuple(deps), pods=pods)


def _parse_pod(service: str, index: int, body: Any) -> Pod:
    where = f"services.{service}.pods[{index}]"
    body = _mapping(body, where)
    name = body.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise MeshError(f"{where}.name: pod name must be a DNS label (lowercase, digits, '-')")
    labels = _mapping(body.get("labels", {}), f"{where}.labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise MeshError(f"{where}.labels: {key!r} is not a valid label key")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise MeshError(f"{where}.labels.{key}: {value!r} is not a valid label value")
    ports_doc = _mapping(body.get("ports"), f"{where}.ports")
    unknown = set(ports_doc) - set(PORT_NAMES)
    if unknown:
        raise MeshError(f"{where}.ports: unknown port name(s) {sorted(unknown)}")
    ports = {}
    for port_name in PORT_NAMES:
        value = ports_doc.get(port_name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise MeshError(f"{where}.ports.{port_name}: must be an integer port 1-65535")
        ports[port_name] = value
    return Pod(name=name, service=service, labels=dict(labels), ports=PodPorts(**ports))


def _check_dependencies(services: dict[str, Service]) -> None:
    for service in services.values():
        for dep in service.dependencies:
            if dep not in services:
                raise MeshError(f"services.{service.name}.dependencies: unknown dependency {dep!r}")
            if dep == service.name:
                raise MeshError(
                    f"services.{service.name}.dependencies: a service cannot call itself"
                )
    _check_acyclic(services)
    seen: dict[str, str] = {}
    for service in services.values():
        for pod in service.pods:
            if pod.name in seen:
                raise MeshError(
                    f"services.{service.name}.pods: duplicate pod {pod.name!r} "
                    f"(already in services.{seen[pod.name]})"
                )
            seen[pod.name] = service.name


def _check_acyclic(services: dict[str, Service]) -> None:
    """A cycle would make every request recurse until it times out."""
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise MeshError(f"services: dependency cycle {cycle}")
        if name in done:
            return
        for dep in services[name].dependencies:
            visit(dep, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


def _parse_control(body: Any) -> ControlPorts:
    if body is None:
        return ControlPorts()
    body = _mapping(body, "control")
    ports = {}
    for key in ("xds_port", "api_port", "metrics_port"):
        value = body.get(key, getattr(ControlPorts(), key))
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise MeshError(f"control.{key}: must be an integer port 1-65535")
        ports[key] = value
    return ControlPorts(**ports)


def _check_ports(services: dict[str, Service], control: ControlPorts) -> None:
    owners: dict[int, str] = {}

    def claim(port: int, owner: str) -> None:
        if port in owners:
            raise MeshError(f"port clash: {port} is used by {owners[port]} and by {owner}")
        owners[port] = owner

    for key in ("xds_port", "api_port", "metrics_port"):
        claim(getattr(control, key), f"control.{key}")
    for service in services.values():
        for pod in service.pods:
            for port_name, port in pod.ports.items():
                claim(port, f"{pod.name}.ports.{port_name}")


def _parse_load(body: Any, services: dict[str, Service]) -> LoadSpec | None:
    if body is None:
        return None
    body = _mapping(body, "load")
    service = body.get("service")
    if service not in services:
        raise MeshError(f"load.service: unknown service {service!r}")
    method = body.get("method", LoadSpec.method)
    if method not in ("GET", "POST", "PUT"):
        raise MeshError("load.method: must be GET, POST or PUT")
    path = body.get("path", LoadSpec.path)
    if not isinstance(path, str) or not path.startswith("/"):
        raise MeshError("load.path: must start with '/'")
    rate = body.get("rate_per_second", LoadSpec.rate_per_second)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= 10_000:
        raise MeshError("load.rate_per_second: must be a number in (0, 10000]")
    return LoadSpec(service=service, method=method, path=path, rate_per_second=float(rate))


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise MeshError(f"{where}: must be a mapping")
    return value
