"""Operator commands: inject, plan, get, ls, abort, watch, sidecars.

Each talks to the operator API at --api (or $FAULTPLANE_API). Tables by default,
`--json` for scripts: with it, stdout carries only JSON (messages go to stderr). Exit
codes: 0 done, 1 a refused or failed call, 2 a usage error (bad flags, a bad document).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from faultplane.cli.connection import (
    RPC_TIMEOUT,
    add_connection_arguments,
    fault_stub,
    open_channel,
)
from faultplane.cli.document import DocumentError, read_injection_request, size_problem
from faultplane.cli.tables import (
    baseline_summary,
    injection_detail,
    injections_table,
    plan_summary,
    queue_table,
    sidecars_table,
)
from faultplane.cli.watching import RECONNECT_FOR, cmd_watch, watch_dropped
from faultplane.cli.window_flag import add_window_argument
from faultplane.server.control import MAX_API_MESSAGE_BYTES
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

# The API's limit on a request (the server's gRPC max message size): a larger request is
# refused here, naming the fields that make it large, before it is sent. A server with
# another limit refuses with RESOURCE_EXHAUSTED, which `_sent` words the same way.
MAX_REQUEST_BYTES = MAX_API_MESSAGE_BYTES
_TOO_LARGE = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


class UsageError(Exception):
    """Bad command-line input, reported without a traceback (exit 2)."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    inject = commands.add_parser("inject", help="start an injection from a JSON or YAML file")
    _api(inject)
    inject.add_argument("-f", "--file", required=True, help="JSON or YAML; - for stdin")
    inject.add_argument(
        "--no-wait", action="store_true", help="return at once instead of waiting for ACTIVE"
    )
    inject.add_argument(
        "--queue",
        action="store_true",
        help="if it overlaps a live injection, wait QUEUED until that ends (on_conflict: queue)",
    )
    add_window_argument(inject)
    inject.add_argument("--json", action="store_true")
    inject.set_defaults(handler=cmd_inject)

    queue = commands.add_parser(
        "queue", help="what runs, what starts when and what waits, if nothing changes"
    )
    _api(queue)
    queue.add_argument("--json", action="store_true")
    queue.set_defaults(handler=cmd_queue)

    plan = commands.add_parser("plan", help="dry run: the sidecars and changes, nothing applied")
    _api(plan)
    plan.add_argument("-f", "--file", required=True, help="JSON or YAML; - for stdin")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=cmd_plan)

    get = commands.add_parser("get", help="one injection, with its transitions and evidence")
    _api(get)
    get.add_argument("id")
    get.add_argument("--json", action="store_true")
    get.set_defaults(handler=cmd_get)

    ls = commands.add_parser("ls", help="list injections, newest first")
    _api(ls)
    ls.add_argument("--state", action="append", default=[], choices=_state_names())
    ls.add_argument("--service", default="")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_ls)

    abort = commands.add_parser("abort", help="withdraw one injection, or --all of them")
    _api(abort)
    abort.add_argument("id", nargs="?")
    abort.add_argument("--all", action="store_true", help="withdraw every live injection")
    abort.add_argument("--reason", default="")
    abort.add_argument(
        "--freeze",
        action="store_true",
        help="with --all: freeze new injections first (big red button)",
    )
    abort.add_argument("--json", action="store_true")
    abort.set_defaults(handler=cmd_abort)

    watch = commands.add_parser(
        "watch",
        help="print state changes as they happen; with an ID, until that injection ends",
    )
    _api(watch)
    watch.add_argument(
        "id", nargs="?", default="", help="only this injection; exit 0 once it has ended"
    )
    watch.add_argument(
        "--reconnect-for",
        type=_seconds,
        metavar="SECONDS",
        default=RECONNECT_FOR,
        help="seconds to keep resubscribing while the control server is unavailable "
        f"(default {RECONNECT_FOR:g}); then exit 1",
    )
    watch.add_argument("--json", action="store_true")
    watch.set_defaults(handler=cmd_watch)

    baseline = commands.add_parser("baseline", help="an SLO's baseline: what fine looks like")
    _api(baseline)
    baseline.add_argument("slo")
    baseline.add_argument("--window", type=float, default=0.0, help="seconds (default: server's)")
    baseline.add_argument("--json", action="store_true")
    baseline.set_defaults(handler=cmd_baseline)

    sidecars = commands.add_parser("sidecars", help="list sidecars and their xDS state")
    _api(sidecars)
    sidecars.add_argument("--service", default="")
    sidecars.add_argument("--json", action="store_true")
    sidecars.set_defaults(handler=cmd_sidecars)


def _api(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be seconds from 0 to 86400, not {text!r}")
    return value


def _state_names() -> list[str]:
    return [name for name, _ in pb.State.items() if name != "STATE_UNSPECIFIED"]


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, faultplane_pb2_grpc.FaultServiceStub]:
    channel = open_channel(args)
    return channel, fault_stub(channel)


def read_request(path: str) -> pb.InjectionRequest:
    """The request a document describes, every problem of it named by field (exit 2)."""
    try:
        request = read_injection_request(path)
    except DocumentError as exc:
        raise UsageError(str(exc)) from None
    problem = size_problem(request, MAX_REQUEST_BYTES)
    if problem:
        raise UsageError(f"{'<stdin>' if path == '-' else path}: {problem}")
    return request


def _sent(call: Any, request: pb.InjectionRequest) -> Any:
    """`call(request)`, with a refusal for size turned into which field is too large."""
    try:
        return call(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        found = _TOO_LARGE.search(exc.details() or "")  # type: ignore[attr-defined]
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or not found:  # type: ignore[attr-defined]
            raise
        raise _TooLarge(size_problem(request, int(found.group(2))) or str(exc)) from None


class _TooLarge(Exception):
    """The server refused the request for its size (exit 1, like any refused call)."""


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _print_json(message: Message) -> None:
    print(json.dumps(to_dict(message)), flush=True)


def cmd_inject(args: argparse.Namespace) -> int:
    request = read_request(args.file)
    if args.queue:
        request.on_conflict = pb.ON_CONFLICT_QUEUE
    request.windows.extend(args.window)
    channel, stub = _stub(args)
    with channel:
        try:
            if args.no_wait:
                injection = _sent(stub.CreateInjection, request)
            else:
                injection = _create_and_wait(stub, request)
        except _TooLarge as exc:
            print(f"faultplane: RESOURCE_EXHAUSTED: {exc}", file=sys.stderr)
            return 1
    if args.json:
        _print_json(injection)
    else:
        print(injection_detail(injection))
    return 0


def _create_and_wait(
    stub: faultplane_pb2_grpc.FaultServiceStub, request: pb.InjectionRequest
) -> pb.Injection:
    """Create, then follow the injection until it leaves PENDING."""
    injection: pb.Injection | None = None
    while True:
        events = stub.WatchInjections(pb.WatchInjectionsRequest())
        try:
            events.initial_metadata()  # subscribed: no state change can slip past
            if injection is None:
                injection = _sent(stub.CreateInjection, request)
            current = stub.GetInjection(
                pb.GetInjectionRequest(id=injection.id), timeout=RPC_TIMEOUT
            )
            if current.state != pb.PENDING:
                return current
            try:
                for event in events:
                    if event.injection.id == injection.id and event.injection.state != pb.PENDING:
                        return event.injection
            except grpc.RpcError as exc:
                if not watch_dropped(exc):
                    raise
                # The server dropped this watcher in a burst of other injections' events:
                # subscribe again and re-read, rather than fail an injection that exists.
                continue
            return injection
        finally:
            events.cancel()


def cmd_plan(args: argparse.Namespace) -> int:
    request = read_request(args.file)
    channel, stub = _stub(args)
    with channel:
        try:
            plan = _sent(stub.PlanInjection, request)
        except _TooLarge as exc:
            print(f"faultplane: RESOURCE_EXHAUSTED: {exc}", file=sys.stderr)
            return 1
    if args.json:
        _print_json(plan)
    else:
        print(plan_summary(plan, request))
    return 0


def cmd_get(args: argparse.Namespace) -> None:
    channel, stub = _stub(args)
    with channel:
        injection = stub.GetInjection(pb.GetInjectionRequest(id=args.id), timeout=RPC_TIMEOUT)
    if args.json:
        _print_json(injection)
    else:
        print(injection_detail(injection))


def cmd_queue(args: argparse.Namespace) -> None:
    channel, stub = _stub(args)
    with channel:
        rows = stub.ListQueue(pb.ListQueueRequest(), timeout=RPC_TIMEOUT).rows
    if args.json:
        print(json.dumps([to_dict(row) for row in rows]), flush=True)
    else:
        print(queue_table(rows))


def cmd_ls(args: argparse.Namespace) -> None:
    channel, stub = _stub(args)
    with channel:
        injections = list(_all_injections(stub, args.state, args.service))
    if args.json:
        print(json.dumps([to_dict(inj) for inj in injections]), flush=True)
    else:
        print(injections_table(injections))


def _all_injections(
    stub: faultplane_pb2_grpc.FaultServiceStub, states: list[str], service: str
) -> Iterator[pb.Injection]:
    request = pb.ListInjectionsRequest(
        states=[pb.State.Value(s) for s in states], service=service, page_size=200
    )
    while True:
        page = stub.ListInjections(request, timeout=RPC_TIMEOUT)
        yield from page.injections
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def cmd_abort(args: argparse.Namespace) -> None:
    if args.all == bool(args.id):
        raise UsageError("abort: give an injection id, or --all")
    if args.freeze and not args.all:
        raise UsageError("abort: --freeze goes with --all")
    channel, stub = _stub(args)
    with channel:
        if args.freeze:  # first, so that nothing new starts while everything is withdrawn
            reason = args.reason or "abort --all --freeze"
            stub.Freeze(pb.FreezeRequest(reason=reason), timeout=RPC_TIMEOUT)
        if args.all:
            reply = stub.AbortAllInjections(
                pb.AbortAllInjectionsRequest(reason=args.reason), timeout=RPC_TIMEOUT
            )
            aborted = list(reply.aborted)
        else:
            aborted = [
                stub.AbortInjection(
                    pb.AbortInjectionRequest(id=args.id, reason=args.reason), timeout=RPC_TIMEOUT
                )
            ]
    if args.json:
        print(json.dumps([to_dict(inj) for inj in aborted]), flush=True)
    else:
        print(injections_table(aborted) if aborted else "nothing live to abort")


def cmd_baseline(args: argparse.Namespace) -> None:
    channel, stub = _stub(args)
    with channel:
        baseline = stub.GetBaseline(
            pb.GetBaselineRequest(slo=args.slo, window_seconds=args.window), timeout=RPC_TIMEOUT
        )
    if args.json:
        _print_json(baseline)
    else:
        print(baseline_summary(baseline))


def cmd_sidecars(args: argparse.Namespace) -> None:
    channel, stub = _stub(args)
    with channel:
        reply = stub.ListSidecars(pb.ListSidecarsRequest(service=args.service), timeout=RPC_TIMEOUT)
    if args.json:
        print(json.dumps([to_dict(s) for s in reply.sidecars]), flush=True)
    else:
        print(sidecars_table(reply.sidecars))
