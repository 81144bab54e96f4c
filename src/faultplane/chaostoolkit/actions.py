"""Chaos Toolkit actions: start a faultplane injection, abort one, abort everything.

In an experiment (provider `{"type": "python", "module": "faultplane.chaostoolkit.actions",
"func": ...}`):
- `inject(document=... | file=..., wait=True, timeout=60)`: the injection document
  `faultplane inject -f` reads (a mapping here, or the path of a JSON/YAML file); waits
  until the injection leaves PENDING (ACTIVE: every target ACKed), like the CLI. Returns
  `{"id", "state", "reason", "verdict", "targets"}`.
- `abort(injection_id=None, reason="")`: one injection, by default the latest this run
  started.
- `abort_all(reason="")`: every live injection on the control plane, whoever started it.
- `abort_started(reason="")`: the rollback: every injection this run started that is
  still live. Chaos Toolkit skips rollbacks on an interrupted run; the control
  `faultplane.chaostoolkit.control` does the same work then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import grpc
from chaoslib.exceptions import ActivityFailed

from faultplane.chaostoolkit import registry
from faultplane.chaostoolkit.connection import Connection, Stub, call, connection_from
from faultplane.chaostoolkit.following import follow, get, has_ended, has_left_pending, summary
from faultplane.chaostoolkit.interruption import interruptible
from faultplane.cli.connection import RPC_TIMEOUT
from faultplane.cli.document import (
    DocumentError,
    read_injection_request,
    request_from_document,
    size_problem,
)
from faultplane.server.control import MAX_API_MESSAGE_BYTES
from faultplane.v1 import faultplane_pb2 as pb

__all__ = ["abort", "abort_all", "abort_started", "inject"]

DEFAULT_REASON = "Chaos Toolkit experiment"


@interruptible
def inject(
    document: Mapping[str, Any] | None = None,
    file: str | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the injection the document describes and return its id and state."""
    request = _request(document, file)
    connection = connection_from(configuration, secrets)

    def create(stub: Stub) -> pb.Injection:
        injection = _create(stub, request, connection)
        if not wait:
            return injection
        return follow(stub, injection.id, has_left_pending, timeout, "leave PENDING")

    return summary(call(connection, create))


def _request(document: Mapping[str, Any] | None, file: str | None) -> pb.InjectionRequest:
    """The request, with every problem of the document named by field, before any call."""
    if (document is None) == (file is None):
        raise ActivityFailed("document, file: give exactly one (the injection document)")
    try:
        if file is not None:
            source, request = file, read_injection_request(file)
        else:
            source, request = "document", request_from_document(document, "document")
    except DocumentError as exc:
        raise ActivityFailed(str(exc)) from None
    problem = size_problem(request, MAX_API_MESSAGE_BYTES)
    if problem:
        raise ActivityFailed(f"{source}: {problem}")
    return request


def _create(stub: Stub, request: pb.InjectionRequest, connection: Connection) -> pb.Injection:
    """CreateInjection, with the id recorded even when the run is interrupted mid-call.

    Ctrl-C or SIGTERM may land after the request reached the server and before its
    answer: the injection then exists, and only its id lets the control abort it. So an
    interruption here waits (once more, bounded) for the answer before it propagates."""
    future = stub.CreateInjection.future(request, timeout=RPC_TIMEOUT)
    try:
        injection = future.result()
    except grpc.RpcError:
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit, chaoslib's InterruptExecution
        # Not created, or the server cannot say: nothing to record.
        with contextlib.suppress(grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
            registry.record(future.result(timeout=RPC_TIMEOUT).id, connection)
        raise
    registry.record(injection.id, connection)
    return injection


@interruptible
def abort(
    injection_id: str | None = None,
    reason: str = "",
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Withdraw one injection (default: the latest this run started)."""
    injection_id, connection = registry.resolve(injection_id, configuration, secrets)
    request = pb.AbortInjectionRequest(id=injection_id, reason=reason or DEFAULT_REASON)
    aborted = call(connection, lambda stub: stub.AbortInjection(request, timeout=RPC_TIMEOUT))
    return summary(aborted)


@interruptible
def abort_all(
    reason: str = "",
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> list[str]:
    """Withdraw every live injection on the control plane; the ids aborted."""
    connection = connection_from(configuration, secrets)
    request = pb.AbortAllInjectionsRequest(reason=reason or DEFAULT_REASON)
    reply = call(connection, lambda stub: stub.AbortAllInjections(request, timeout=RPC_TIMEOUT))
    return [injection.id for injection in reply.aborted]


@interruptible
def abort_started(reason: str = "") -> list[str]:
    """The rollback: abort every injection this run started that is still live; the ids
    aborted. Each is aborted on the connection it was created on, so a rollback needs no
    configuration, and one unreachable control plane does not spare the others."""
    aborted: list[str] = []
    failures: list[str] = []
    for injection_id, connection in registry.started():
        try:
            if _abort_if_live(injection_id, connection, reason or DEFAULT_REASON):
                aborted.append(injection_id)
        except ActivityFailed as exc:
            failures.append(f"{injection_id}: {exc}")
    if failures:
        raise ActivityFailed("could not abort " + "; ".join(failures))
    return aborted


def _abort_if_live(injection_id: str, connection: Connection, reason: str) -> bool:
    def work(stub: Stub) -> bool:
        if has_ended(get(stub, injection_id)):
            return False
        try:
            stub.AbortInjection(
                pb.AbortInjectionRequest(id=injection_id, reason=reason), timeout=RPC_TIMEOUT
            )
        except grpc.RpcError:
            if has_ended(get(stub, injection_id)):  # it ended between the read and the abort
                return False
            raise
        return True

    return call(connection, work)
