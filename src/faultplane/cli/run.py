"""`faultplane run -f EXPERIMENT`: one experiment from submission to verdict, for a pipeline.

It submits the document as `inject` does, follows the injection live (one line per
transition and per guard reading; a progress bar to the deadline on a terminal), writes
the reports asked for, and exits with the server's verdict as a code a pipeline can gate
on:

- 0 "hypothesis held" (the deadline came with the steady state read throughout);
- 1 "hypothesis refuted" (the steady-state guard aborted it);
- 2 any other end: inconclusive, FAILED, aborted by an operator (or by Ctrl-C), or the
  control server lost while following;
- 3 refused at submission: a document that cannot become a request, or a call the server
  refuses (INVALID_ARGUMENT, FAILED_PRECONDITION, PERMISSION_DENIED, ...).

The verdict is the server's own words (lifecycle's HELD / REFUTED), compared exactly:
the runner never re-judges readings. Ctrl-C (or SIGTERM, a cancelled CI job) aborts the
experiment, saying so first, and follows it to its end; with --detach it only stops
following (exit 130) and the injection runs on. A second Ctrl-C stops waiting.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import grpc

from faultplane.cli.connection import (
    RPC_TIMEOUT,
    add_connection_arguments,
    fault_stub,
    open_channel,
    rpc_error_message,
)
from faultplane.cli.injections import UsageError, read_request
from faultplane.cli.reports import (
    Outcome,
    evidence_summary,
    seconds,
    utc,
    write_json,
    write_junit,
    write_markdown,
)
from faultplane.cli.tables import state_name
from faultplane.cli.watching import FINAL_STATES, RECONNECT_FOR
from faultplane.cli.window_flag import add_window_argument
from faultplane.lifecycle.lifecycle import HELD, REFUTED
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

EXIT_HELD, EXIT_REFUTED, EXIT_INCONCLUSIVE, EXIT_REFUSED = 0, 1, 2, 3
EXIT_DETACHED = 130
# GetInjection at least this often (readings are not events); a transition wakes it at once.
POLL_SECONDS = 1.0
SLICE_SECONDS = 0.2  # how soon a Ctrl-C or a wake-up is noticed while waiting
# The server answered and said no: the document or the caller is at fault, not the run.
REFUSALS = frozenset(
    getattr(grpc.StatusCode, name)
    for name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED",
                 "RESOURCE_EXHAUSTED", "ALREADY_EXISTS", "OUT_OF_RANGE")
)  # fmt: skip


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run one experiment to its verdict: exit 0 held, 1 refuted, 2 inconclusive, 3 refused",
    )
    add_connection_arguments(run)
    run.add_argument("-f", "--file", required=True, help="the experiment, JSON or YAML")
    add_window_argument(run)
    run.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    run.add_argument("--report", type=Path, metavar="FILE", help="write the JSON history here")
    run.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write a report here (chart beside it)"
    )
    run.add_argument(
        "--detach",
        action="store_true",
        help="on Ctrl-C stop following and leave the experiment running (default: abort it)",
    )
    run.set_defaults(handler=cmd_run)


def verdict_exit_code(verdict: str) -> int:
    """The server's verdict as an exit code: only its exact words count as held/refuted."""
    if verdict == HELD:
        return EXIT_HELD
    if verdict == REFUTED:
        return EXIT_REFUTED
    return EXIT_INCONCLUSIVE


def cmd_run(args: argparse.Namespace) -> int:
    narrator = Narrator(sys.stdout.isatty())
    started = time.time()

    def refused(request: pb.InjectionRequest | None, why: str, code: int) -> int:
        print(f"faultplane run: {why}", file=sys.stderr, flush=True)
        verdict = f"refused: {why}" if code == EXIT_REFUSED else f"not run: {why}"
        return _finish(args, Outcome(args.file, code, verdict, why, started, time.time(), request))

    try:
        request = read_request(args.file)
        request.windows.extend(args.window)
    except UsageError as exc:
        return refused(None, str(exc), EXIT_REFUSED)
    with Interrupts() as interrupts, open_channel(args) as channel:
        stub = fault_stub(channel)
        try:
            created = stub.CreateInjection(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            why = rpc_error_message(exc, args).removeprefix("faultplane: ")
            return refused(request, why, EXIT_REFUSED if code in REFUSALS else EXIT_INCONCLUSIVE)
        narrator.say(
            f"{args.file}: submitted {created.id} on {len(created.targets)} sidecar(s): "
            f"{', '.join(created.targets)}"
        )
        follow = Follow(stub, created, narrator, interrupts, args.detach)
        final, ending = follow.run()
    if ending:  # stopped following before the end: detached, interrupted twice, or lost
        followed_off = interrupts.count > (0 if args.detach else 1)
        code = EXIT_DETACHED if followed_off else EXIT_INCONCLUSIVE
        verdict, reason = ending, ending
    else:
        code = verdict_exit_code(final.verdict)
        verdict, reason = final.verdict or "inconclusive: no verdict", final.reason
        narrator.say(f"{final.id} ended {pb.State.Name(final.state)}: {verdict} (exit {code})")
    outcome = Outcome(
        args.file, code, verdict, reason, started, time.time(), request, final,
        follow.readings(), tuple(narrator.lines),
    )  # fmt: skip
    return _finish(args, outcome)


def _finish(args: argparse.Namespace, outcome: Outcome) -> int:
    for path in (args.junit, args.report, args.markdown):
        if path is not None:  # `--junit reports/chaos.xml` in a fresh CI checkout
            path.parent.mkdir(parents=True, exist_ok=True)
    if args.junit:
        write_junit(args.junit, [outcome])
    if args.report:
        write_json(args.report, outcome)
    if args.markdown:
        note = write_markdown(args.markdown, outcome)
        if note:
            print(f"faultplane run: {args.markdown} written; {note}", file=sys.stderr)
    return outcome.exit_code


class Interrupts:
    """Counts SIGINT/SIGTERM instead of raising: a Ctrl-C in the middle of a call must
    not lose the injection it created, so the follower acts on it between calls."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1


class Narrator:
    """The live account: one line per event, stamped; on a terminal, a progress bar to the
    deadline redrawn under them. Every line is kept for the reports."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.lines: list[str] = []
        self._bar_drawn = False

    def say(self, line: str) -> None:
        self._clear_bar()
        print(line, flush=True)
        self.lines.append(line)

    def bar(self, injection: pb.Injection, now: float) -> None:
        if not self.tty or injection.state != pb.ACTIVE or not injection.ends_at.seconds:
            return
        text = progress_bar(seconds(injection.activated_at), seconds(injection.ends_at), now)
        sys.stdout.write("\r\033[K" + text)
        sys.stdout.flush()
        self._bar_drawn = True

    def _clear_bar(self) -> None:
        if self._bar_drawn:
            sys.stdout.write("\r\033[K")
            self._bar_drawn = False


def progress_bar(start: float, end: float, now: float, width: int = 30) -> str:
    """`[#########.....]  12s / 30s, 18s left`: how far the run is towards its deadline."""
    total = max(end - start, 1e-9)
    done = min(max(now - start, 0.0), total)
    filled = round(width * done / total)
    left = total - done
    return f"[{'#' * filled}{'.' * (width - filled)}]  {done:.0f}s / {total:.0f}s, {left:.0f}s left"


def transition_line(change: pb.Transition) -> str:
    summary = evidence_summary(change)
    return (
        f"{utc(change.at)}  {state_name(change.from_state)} -> {state_name(change.to_state)}"
        f"  {change.reason}" + (f"  [{summary}]" if summary else "")
    )


def reading_line(reading: pb.SloReading, steady: pb.SteadyState) -> str:
    minimum = f"{steady.min:g}" if steady.HasField("min") else "-"
    if reading.HasField("value"):
        compared = "<" if reading.breach else ">="
        what = f"{reading.value:.4f} {compared} min {minimum}"
    else:
        what = f"unreadable ({reading.error or 'no value'}), min {minimum}"
    if reading.HasField("control_value"):
        what += f", control {reading.control_value:.4f}"
    state = f"BREACH for {reading.breach_seconds:.1f}s" if reading.breach else "ok"
    return f"{utc(reading.at)}  {steady.slo} {what}  {state}"


class Follow:
    """Follows one injection to its end: GetInjection is the truth (transitions and
    readings); a WatchInjections stream only wakes it early for a transition."""

    def __init__(
        self,
        stub: faultplane_pb2_grpc.FaultServiceStub,
        created: pb.Injection,
        narrator: Narrator,
        interrupts: Interrupts,
        detach: bool,
    ) -> None:
        self._stub = stub
        self._latest = created
        self._narrator = narrator
        self._interrupts = interrupts
        self._detach = detach
        self._aborting = False
        self._transitions_shown = 0
        self._readings: dict[int, pb.SloReading] = {}
        self._outage_since: float | None = None

    def readings(self) -> tuple[pb.SloReading, ...]:
        return tuple(self._readings[at] for at in sorted(self._readings))

    def run(self) -> tuple[pb.Injection, str]:
        """(the last injection seen, "" once it ended, or why following stopped first)."""
        wakeups = Wakeups(self._stub, self._latest.id)
        try:
            while True:
                stopped = self._on_interrupts()
                if stopped:
                    return self._latest, stopped
                lost = self._refresh()
                if lost:
                    return self._latest, lost
                if self._latest.state in FINAL_STATES:
                    return self._latest, ""
                self._wait(wakeups)
        finally:
            wakeups.close()

    def _on_interrupts(self) -> str:
        count, injection_id = self._interrupts.count, self._latest.id
        if count and self._detach:
            self._narrator.say(
                f"stopped following {injection_id}; it runs on "
                f"(faultplane watch {injection_id}; faultplane abort {injection_id})"
            )
            return f"detached: {injection_id} left running"
        if count and not self._aborting:
            self._aborting = True
            self._narrator.say(
                f"interrupted: aborting {injection_id} "
                "(Ctrl-C again to stop waiting for the withdrawal)"
            )
            try:
                self._stub.AbortInjection(
                    pb.AbortInjectionRequest(id=injection_id, reason="interrupted: faultplane run"),
                    timeout=RPC_TIMEOUT,
                )
            except grpc.RpcError as exc:  # it ended meanwhile, or the server is gone
                self._narrator.say(f"abort: {_status(exc)}")
        if count > 1:
            return f"inconclusive: stopped waiting for {injection_id} to be withdrawn"
        return ""

    def _refresh(self) -> str:
        """Reads the injection, printing what is new; a reason when it cannot go on."""
        try:
            current = self._stub.GetInjection(
                pb.GetInjectionRequest(id=self._latest.id), timeout=RPC_TIMEOUT
            )
        except grpc.RpcError as exc:
            message = _status(exc)
            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                return f"inconclusive: lost {self._latest.id}: {message}"
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
                print(f"faultplane run: {message}; retrying", file=sys.stderr, flush=True)
            if now - self._outage_since > RECONNECT_FOR:
                return f"inconclusive: no control server for {RECONNECT_FOR:g}s: {message}"
            return ""
        self._outage_since = None
        self._show(current)
        self._latest = current
        return ""

    def _show(self, injection: pb.Injection) -> None:
        steady = injection.request.steady_state
        events: list[tuple[int, str]] = []
        for change in injection.transitions[self._transitions_shown :]:
            events.append((change.at.ToNanoseconds(), transition_line(change)))
        self._transitions_shown = len(injection.transitions)
        for reading in injection.readings:
            at = reading.at.ToNanoseconds()
            if at not in self._readings:
                self._readings[at] = reading
                events.append((at, reading_line(reading, steady)))
        for _, line in sorted(events, key=lambda event: event[0]):
            self._narrator.say(line)

    def _wait(self, wakeups: Wakeups) -> None:
        deadline = time.monotonic() + POLL_SECONDS
        while time.monotonic() < deadline and self._interrupts.count <= int(self._aborting):
            self._narrator.bar(self._latest, time.time())
            if wakeups.wait(SLICE_SECONDS):
                return


def _status(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]


class Wakeups:
    """A WatchInjections stream for one injection, read by a daemon thread that sets an
    event per transition. If the stream fails (a restart, a lagging subscriber), polling
    carries on alone: the follower loses latency, never events."""

    def __init__(self, stub: faultplane_pb2_grpc.FaultServiceStub, injection_id: str) -> None:
        self._event = threading.Event()
        self._call = stub.WatchInjections(pb.WatchInjectionsRequest(id=injection_id))
        self._thread = threading.Thread(target=self._read, name="run-wakeups", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for _ in self._call:
                self._event.set()
        except grpc.RpcError:
            pass  # cancelled on close, or the stream broke: polling goes on

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=2)
