"""The scheduler's commands: blackout add|ls|rm, policy show|set, schedule, schedules
ls|pause|resume|rm, and `inject --window` (faultplane.cli.window_flag).

Each is one call to the operator API (`policy set` two: it changes only the limits
given); every one is audited by the server. Exit codes as elsewhere: 0 done, 1 refused,
2 usage.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from faultplane.cli.connection import RPC_TIMEOUT
from faultplane.cli.injections import UsageError, _api, _stub, read_request, to_dict
from faultplane.cli.tables import table
from faultplane.scheduling.clock import duration
from faultplane.scheduling.errors import ScheduleError
from faultplane.v1 import faultplane_pb2 as pb


def add_scheduling_commands(commands: argparse._SubParsersAction) -> None:
    blackout = commands.add_parser("blackout", help="server-wide blackouts: no experiment runs")
    actions = blackout.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add one: --weekly 'Fri 16:00 - Mon 09:00' or a range")
    _api(add)
    add.add_argument("name", help="e.g. 'month-end settlement'")
    add.add_argument("--weekly", default="", help="'Fri 16:00 - Mon 09:00', every week in --tz")
    add.add_argument("--tz", default="", help="IANA zone of --weekly, e.g. Europe/Berlin")
    add.add_argument("--start", help="one-off: ISO 8601 with offset, e.g. 2026-12-31T18:00Z")
    add.add_argument("--end", help="one-off: ISO 8601 with offset")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=cmd_blackout_add)
    ls = actions.add_parser("ls", help="every blackout")
    _api(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_blackout_ls)
    rm = actions.add_parser("rm", help="remove one (what waited for it may start)")
    _api(rm)
    rm.add_argument("id")
    rm.set_defaults(handler=cmd_blackout_rm)

    policy = commands.add_parser("policy", help="the scheduling rules: cool-down, caps, deps")
    actions = policy.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the current policy")
    _api(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_policy_show)
    put = actions.add_parser("set", help="change the limits given (0 / off: no limit)")
    _api(put)
    put.add_argument("--cooldown", help="at most one experiment per service per this: 1h, 0")
    put.add_argument("--max-per-service", type=int, help="concurrent experiments per service")
    put.add_argument("--max-fleet", type=int, help="concurrent experiments fleet-wide")
    put.add_argument("--dependency-rule", choices=["on", "off"], help="same request path waits")
    put.add_argument("--json", action="store_true")
    put.set_defaults(handler=cmd_policy_set)

    schedule = commands.add_parser("schedule", help="run an experiment on a recurrence")
    _api(schedule)
    schedule.add_argument("-f", "--file", required=True, help="JSON or YAML; - for stdin")
    schedule.add_argument("--every", default="", help="1d, 12h, 30m: from --start (or now)")
    schedule.add_argument("--cron", default="", help="five fields in --tz, e.g. '0 11 * * 1-5'")
    schedule.add_argument("--tz", default="", help="IANA zone (default UTC)")
    schedule.add_argument("--start", help="--every's first occurrence, ISO 8601 with offset")
    schedule.add_argument("--name", default="")
    schedule.add_argument("--json", action="store_true")
    schedule.set_defaults(handler=cmd_schedule)

    schedules = commands.add_parser("schedules", help="recurring experiments")
    actions = schedules.add_subparsers(required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="every schedule, its next run and held-rate")
    _api(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_schedules_ls)
    for name, handler, text in (
        ("pause", cmd_schedules_pause, "queue no more occurrences until resumed"),
        ("resume", cmd_schedules_resume, "queue occurrences again, from now"),
        ("rm", cmd_schedules_rm, "delete it (queued occurrences stay)"),
    ):
        action = actions.add_parser(name, help=text)
        _api(action)
        action.add_argument("id")
        action.set_defaults(handler=handler)


def _stamp(text: str, flag: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UsageError(f"{flag}: {text!r} has no offset (add Z or +05:30)")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _print(message: Message, text: str, as_json: bool) -> None:
    print(json.dumps(to_dict(message)) if as_json else text, flush=True)


def _call(args: argparse.Namespace, method: str, request: Message) -> Any:
    channel, stub = _stub(args)
    with channel:
        return getattr(stub, method)(request, timeout=RPC_TIMEOUT)


def cmd_blackout_add(args: argparse.Namespace) -> None:
    request = pb.AddBlackoutRequest(name=args.name, weekly=args.weekly, tz=args.tz)
    if args.start:
        request.start.CopyFrom(_stamp(args.start, "--start"))
    if args.end:
        request.end.CopyFrom(_stamp(args.end, "--end"))
    added = _call(args, "AddBlackout", request)
    text = f"{added.id}  {added.description}"
    if added.overlapping:
        text += (
            f"\nstill running into it (not stopped; abort or freeze if needed): "
            f"{', '.join(added.overlapping)}"
        )
    _print(added, text, args.json)


def cmd_blackout_ls(args: argparse.Namespace) -> None:
    found = _call(args, "ListBlackouts", pb.ListBlackoutsRequest()).blackouts
    if args.json:
        print(json.dumps([to_dict(b) for b in found]), flush=True)
    elif not found:
        print("no blackouts")
    else:
        print(table(["ID", "BLACKOUT", "BY"], [[b.id, b.description, b.created_by] for b in found]))


def cmd_blackout_rm(args: argparse.Namespace) -> None:
    removed = _call(args, "RemoveBlackout", pb.RemoveBlackoutRequest(id=args.id))
    print(f"removed {removed.id}  {removed.description}")


def policy_text(policy: pb.SchedulingPolicy) -> str:
    cool = f"{policy.cooldown_seconds:g}s" if policy.cooldown_seconds else "none"
    lines = [
        f"cool-down        {cool} per service",
        f"max per service  {policy.max_per_service or 'no limit'}",
        f"max fleet-wide   {policy.max_fleet or 'no limit'}",
        f"dependency rule  {'on' if policy.dependency_rule else 'off'}",
    ]
    if policy.updated_by:
        lines.append(f"set by           {policy.updated_by}")
    return "\n".join(lines)


def cmd_policy_show(args: argparse.Namespace) -> None:
    policy = _call(args, "GetPolicy", pb.GetPolicyRequest())
    _print(policy, policy_text(policy), args.json)


def cmd_policy_set(args: argparse.Namespace) -> None:
    policy = _call(args, "GetPolicy", pb.GetPolicyRequest())
    if args.cooldown is not None:
        try:
            cool = 0.0
            if args.cooldown != "0":
                cool = duration(args.cooldown, "--cooldown").total_seconds()
        except ScheduleError as exc:
            raise UsageError(str(exc)) from None
        policy.cooldown_seconds = cool
    for flag in ("max_per_service", "max_fleet"):
        value = getattr(args, flag)
        if value is not None:
            if value < 0:
                raise UsageError(f"--{flag.replace('_', '-')}: must be >= 0 (0: no limit)")
            setattr(policy, flag, value)
    if args.dependency_rule is not None:
        policy.dependency_rule = args.dependency_rule == "on"
    saved = _call(args, "SetPolicy", policy)
    _print(saved, policy_text(saved), args.json)


def cmd_schedule(args: argparse.Namespace) -> None:
    request = pb.CreateScheduleRequest(
        experiment=read_request(args.file), every=args.every, cron=args.cron, tz=args.tz,
        name=args.name,
    )  # fmt: skip
    if args.start:
        request.start.CopyFrom(_stamp(args.start, "--start"))
    created = _call(args, "CreateSchedule", request)
    next_at = _when(created.next_at) if created.HasField("next_at") else "-"
    _print(created, f"{created.id}  {created.recurrence}  next {next_at}", args.json)


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    return f"{stamp.ToDatetime():%Y-%m-%d %H:%M} UTC"


def schedules_table(schedules: list[pb.Schedule]) -> str:
    if not schedules:
        return "no schedules"
    rows = []
    for s in schedules:
        recent = " ".join(_verdict_mark(o) for o in s.history[:10]) or "-"
        held = f"{s.held_rate:.0%} of {s.judged}" if s.judged else "-"
        rows.append([
            s.id, s.name or "-", s.recurrence, "paused" if s.paused else "on",
            _when(s.next_at) if s.HasField("next_at") else "-", held, recent,
        ])  # fmt: skip
    headers = ["ID", "NAME", "RECURRENCE", "STATE", "NEXT", "HELD", "RECENT (newest first)"]
    return table(headers, rows)


def _verdict_mark(occurrence: pb.ScheduleOccurrence) -> str:
    """held / refuted / inconclusive once ended, else its state (QUEUED, ACTIVE, ...)."""
    if occurrence.verdict:
        return occurrence.verdict.split(":")[0].removeprefix("hypothesis ")
    return pb.State.Name(occurrence.state) if occurrence.state else "?"


def cmd_schedules_ls(args: argparse.Namespace) -> None:
    found = list(_call(args, "ListSchedules", pb.ListSchedulesRequest()).schedules)
    if args.json:
        print(json.dumps([to_dict(s) for s in found]), flush=True)
    else:
        print(schedules_table(found))


def _by_id(args: argparse.Namespace, method: str, done: str) -> None:
    item = _call(args, method, pb.ScheduleIdRequest(id=args.id))
    print(f"{done} {item.id}  {item.recurrence}")


def cmd_schedules_pause(args: argparse.Namespace) -> None:
    _by_id(args, "PauseSchedule", "paused")


def cmd_schedules_resume(args: argparse.Namespace) -> None:
    _by_id(args, "ResumeSchedule", "resumed")


def cmd_schedules_rm(args: argparse.Namespace) -> None:
    _by_id(args, "RemoveSchedule", "removed")
