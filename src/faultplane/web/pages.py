"""The pages: Now and an experiment's (drawn in the browser from the event stream), and
the sidecars (server-rendered). History and audit have their own modules."""

from __future__ import annotations

import json

from aiohttp import web

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.encode import LIVE_STATES
from faultplane.web.render import page
from faultplane.web.sessions import SESSION


async def now(request: web.Request) -> web.StreamResponse:
    return page(request, "now.html")


async def experiment(request: web.Request) -> web.StreamResponse:
    """The page's live part comes from /events?id=; the plan is rendered here, once: what
    each sidecar is sent for this request against today's mesh."""
    ctx, session = context_of(request), request[SESSION]
    injection_id = request.match_info["id"]
    try:
        injection = await ctx.api.call(
            "GetInjection", pb.GetInjectionRequest(id=injection_id), session
        )
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    plan, plan_error = None, ""
    if injection.state in LIVE_STATES:  # its own scope is taken: a plan now would overlap itself
        plan_error = (
            "not rendered while the experiment is live (it holds its own traffic scope); "
            "reload once it has ended. The transitions above show what each target ACKed."
        )
    else:
        try:
            plan = await ctx.api.call("PlanInjection", injection.request, session)
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
        request, "experiment.html", injection=injection, plan=sidecars, plan_error=plan_error
    )


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
