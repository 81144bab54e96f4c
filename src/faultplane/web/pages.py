"""The pages: Now, the queue and an experiment's (drawn in the browser from the event
stream), and the sidecars (server-rendered). History and audit have their own modules."""

from __future__ import annotations

import json

from aiohttp import web

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.calendar import HORIZON
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.render import page
from faultplane.web.sessions import SESSION


async def now(request: web.Request) -> web.StreamResponse:
    return page(request, "now.html")


async def experiment(request: web.Request) -> web.StreamResponse:
    """The page's live part comes from /events?id=; the plan is rendered here, once:
    what each target is (or was) sent for this injection (GetInjectionPlan)."""
    ctx, session = context_of(request), request[SESSION]
    injection_id = request.match_info["id"]
    try:
        injection = await ctx.api.call(
            "GetInjection", pb.GetInjectionRequest(id=injection_id), session
        )
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    plan, plan_error = None, ""
    if injection.state == pb.QUEUED:
        plan_error = "no target is chosen while it is queued: they are picked when it starts."
    else:
        try:
            plan = await ctx.api.call(
                "GetInjectionPlan", pb.GetInjectionPlanRequest(id=injection_id), session
            )
        except ApiRefused as exc:
            plan_error = exc.message
    sidecars = [
        {
            "sidecar": s.sidecar,
            "route_config": s.route_config,
            "runtime": dict(s.runtime),
            "config": _pretty(s.route_config_json),
        }
        for s in (plan.sidecars if plan else [])
    ]
    return page(
        request,
        "experiment.html",
        injection=injection,
        plan=sidecars,
        plan_error=plan_error,
        unrendered=list(plan.unrendered) if plan else [],
    )


async def queue(request: web.Request) -> web.StreamResponse:
    """The queue's timeline, drawn in the browser from the event stream's `queue`."""
    return page(request, "queue.html", horizon_hours=round(HORIZON.total_seconds() / 3600))


async def sidecars(request: web.Request) -> web.StreamResponse:
    ctx, session = context_of(request), request[SESSION]
    service = request.query.get("service", "")
    try:
        reply = await ctx.api.call("ListSidecars", pb.ListSidecarsRequest(service=service), session)
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    return page(request, "sidecars.html", sidecars=reply.sidecars, service=service)


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text
