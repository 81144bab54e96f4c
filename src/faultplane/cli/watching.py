"""`faultplane watch [ID]`: injection state changes as they happen.

With an ID, `watch` is something a script can wait on: it ends, exit 0, once that
injection is COMPLETED, ABORTED, FAILED or EXPIRED, printing the final state. A watch that
outlives a control-server restart resubscribes instead of dying with the server, and says so on
stderr, so that stdout stays the event stream (`--json`: one InjectionEvent per line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import grpc
from google.protobuf import json_format

from faultplane.cli.connection import RPC_TIMEOUT, api_address, fault_stub, open_channel
from faultplane.cli.tables import state_name
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

FINAL_STATES = frozenset({pb.COMPLETED, pb.ABORTED, pb.FAILED, pb.EXPIRED})
# A restart is ridden out by resubscribing after 0.25 s, then twice as long each time up
# to 4 s, for at most --reconnect-for seconds (default 60); then exit 1.
RECONNECT_FOR = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 4.0


def watch_dropped(exc: grpc.RpcError) -> bool:
    """The server ended a watch because its subscriber fell too far behind."""
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def cmd_watch(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        return _Watch(fault_stub(channel), args).run()


class _Watch:
    """`watch [ID]`: state changes as they happen, riding out control-server restarts.

    With an ID it ends, exit 0, once that injection is COMPLETED, ABORTED or FAILED
    (at once if it already is), printing the final state; an unknown ID is NOT_FOUND,
    exit 1. A stream that ends with UNAVAILABLE after it was established (the server
    restarted) is resubscribed with a bounded backoff, saying so on stderr; after
    --reconnect-for seconds without the server, exit 1. The first connection is not
    retried: a wrong --api should fail now, not in a minute.
    """

    def __init__(self, stub: faultplane_pb2_grpc.FaultServiceStub, args: argparse.Namespace):
        self._stub = stub
        self._args = args
        self._subscribed_once = False
        self._outage_since: float | None = None

    def run(self) -> int:
        delay = BACKOFF_FIRST
        while True:
            events = self._stub.WatchInjections(pb.WatchInjectionsRequest(id=self._args.id))
            try:
                if self._follow(events):
                    return 0
                lost = "the stream ended"  # the server closed it: it is going away
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                details = exc.details()  # type: ignore[attr-defined]
                if watch_dropped(exc):
                    # A live tail that fell behind (a slow terminal or pipe) is dropped
                    # by the server; say that events were missed and carry on.
                    _say(f"faultplane: watch: {details}; resubscribing")
                    continue
                if code != grpc.StatusCode.UNAVAILABLE or not self._subscribed_once:
                    raise
                lost = details
            finally:
                events.cancel()
            if self._outage_since is None:  # a new outage: back off from the start
                delay = BACKOFF_FIRST
            if not self._wait_out(lost, delay):
                return 1
            delay = min(delay * 2, BACKOFF_MAX)

    def _follow(self, events: Any) -> bool:
        """Subscribe, catch up, print events; True once the watched injection ended."""
        events.initial_metadata()  # subscribed: no state change can slip past
        if events.done():  # refused or unreachable: raise its error
            for _ in events:
                pass
            return False
        current = None
        if self._args.id:
            current = self._stub.GetInjection(
                pb.GetInjectionRequest(id=self._args.id), timeout=RPC_TIMEOUT
            )
        self._connected(current)
        if current is not None and current.state in FINAL_STATES:
            self._ended(current, as_event=False)
            return True
        for event in events:
            self._print(event)
            if self._args.id and event.injection.state in FINAL_STATES:
                self._ended(event.injection, as_event=True)
                return True
        return False

    def _connected(self, current: pb.Injection | None) -> None:
        if self._outage_since is not None:
            outage = time.monotonic() - self._outage_since
            missed = (
                f"{self._args.id} is {pb.State.Name(current.state)}"
                if current is not None
                else "state changes during the outage are not replayed (`faultplane ls`)"
            )
            _say(f"faultplane: watch: reconnected after {outage:.1f}s; {missed}")
        elif current is not None and not self._args.json:
            print(f"{current.id}  {pb.State.Name(current.state)}  {current.reason}", flush=True)
        self._subscribed_once = True
        self._outage_since = None

    def _wait_out(self, lost: str, delay: float) -> bool:
        """Back off before resubscribing; False once --reconnect-for has run out."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            _say(f"faultplane: watch: control server unavailable, reconnecting… ({lost})")
        remaining = self._outage_since + self._args.reconnect_for - now
        if remaining <= 0:
            _say(
                f"faultplane: watch: gave up: no control server at {api_address(self._args.api)}"
                f" for {now - self._outage_since:.0f}s (--reconnect-for "
                f"{self._args.reconnect_for:g})"
            )
            return False
        time.sleep(min(delay, remaining))  # retry backoff
        return True

    def _print(self, event: pb.InjectionEvent) -> None:
        if self._args.json:
            _print_json(event)
            return
        change = event.transition
        print(
            f"{change.at.ToJsonString()}  {event.injection.id}  "
            f"{state_name(change.from_state)} -> {state_name(change.to_state)}  "
            f"{change.reason}",
            flush=True,
        )

    def _ended(self, injection: pb.Injection, as_event: bool) -> None:
        """The final state: one line for people; in JSON, the event that carried it was
        printed already, or (ended before the watch) an event without a transition."""
        if self._args.json:
            if not as_event:
                _print_json(pb.InjectionEvent(injection=injection))
            return
        verdict = f"; {injection.verdict}" if injection.verdict else ""
        print(f"{injection.id} ended: {pb.State.Name(injection.state)}{verdict}", flush=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_json(event: pb.InjectionEvent) -> None:
    document = json_format.MessageToDict(event, preserving_proto_field_name=True)
    print(json.dumps(document), flush=True)
