"""The schedules page: every recurring experiment (recurrence, next occurrence, paused,
recent verdicts and held-rate) with Pause/Resume/Remove, and beside them the server's
blackouts and policy (read-only here: adding and removing a blackout or setting the
policy stays with the CLI, where the operator types the calendar).

Server-rendered, like the sidecars page; the page reloads itself after an action or when
the event stream says a schedule, blackout or the policy changed. Each action is one API
call as the user, so the gate decides and audits it; the buttons are only shown to
roles the role table lets make that call.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from faultplane.auth.roles import may_call
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.actions import fields_of
from faultplane.web.calendar import next_span_text
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.encode import as_json
from faultplane.web.render import page
from faultplane.web.sessions import SESSION

# The page's verbs -> the API method each one is.
ACTIONS = {"pause": "PauseSchedule", "resume": "ResumeSchedule", "remove": "RemoveSchedule"}


async def schedules(request: web.Request) -> web.StreamResponse:
    """GET /schedules: schedules, blackouts and the policy, as the user may read them."""
    ctx, session = context_of(request), request[SESSION]
    try:
        listed = await ctx.api.call("ListSchedules", pb.ListSchedulesRequest(), session)
        blackouts = await ctx.api.call("ListBlackouts", pb.ListBlackoutsRequest(), session)
        policy = await ctx.api.call("GetPolicy", pb.GetPolicyRequest(), session)
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    role, now = session.principal.role, datetime.now(UTC)
    return page(
        request,
        "schedules.html",
        schedules=listed.schedules,
        blackouts=blackouts.blackouts,
        policy=policy,
        span_text=lambda blackout: next_span_text(blackout, now),
        may={verb: may_call(role, method) for verb, method in ACTIONS.items()},
    )


async def schedule_action(request: web.Request) -> web.StreamResponse:
    """POST /actions/schedule {id, action: pause|resume|remove}: the schedule as the API
    returns it after the change."""
    ctx, session = context_of(request), request[SESSION]
    fields = await fields_of(request)
    schedule_id, verb = str(fields.get("id", "")), str(fields.get("action", ""))
    if not schedule_id:
        return web.json_response({"error": "id: required"}, status=400)
    if verb not in ACTIONS:
        return web.json_response(
            {"error": f"action: must be one of {', '.join(ACTIONS)}, got {verb!r}"}, status=400
        )
    try:
        changed = await ctx.api.call(ACTIONS[verb], pb.ScheduleIdRequest(id=schedule_id), session)
    except ApiRefused as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    return web.json_response({"schedule": as_json(changed)})
