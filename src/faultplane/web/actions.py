"""What a dashboard user can do: log in and out, abort one experiment, abort all and
freeze. Each action is one API call as that user, so the gate decides and audits it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.encode import as_json
from faultplane.web.guard import set_session_cookie
from faultplane.web.sessions import COOKIE, SESSION

REASON = "from the dashboard"
MAX_TOKEN_CHARS = 512  # far above a real token; a bound on what we pass along


async def login_page(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    if ctx.local:
        raise web.HTTPSeeOther("/")
    return _login_form(request, "", 200)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the token by calling the API with it (a wrong one is refused, rate-limited
    and audited there like any other caller's), then keep it in a server-side session."""
    ctx = context_of(request)
    if ctx.local:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    token = str(form.get("token", "")).strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return _login_form(request, "token: required (faultplane token create issues one)", 400)
    try:
        await ctx.api.call_as(
            "GetFreeze", pb.GetFreezeRequest(), [("authorization", f"Bearer {token}")]
        )
    except ApiRefused as exc:
        return _login_form(request, f"token refused: {exc.message}", exc.status)
    session = ctx.sessions.create(await ctx.whoami(token), token)
    moved = web.HTTPSeeOther(_safe_next(str(form.get("next", ""))))
    set_session_cookie(moved, session, request.secure)
    raise moved


async def logout(request: web.Request) -> web.StreamResponse:
    context_of(request).sessions.drop(request[SESSION].id)
    moved = web.HTTPSeeOther("/login")
    moved.del_cookie(COOKIE, path="/")
    raise moved


async def abort(request: web.Request) -> web.StreamResponse:
    """POST /actions/abort {id}: returns once every target answered the withdrawal, with
    the injection (ABORTED, and each target's evidence in its last transition)."""
    ctx, session = context_of(request), request[SESSION]
    fields = await fields_of(request)
    injection_id = str(fields.get("id", ""))
    if not injection_id:
        return web.json_response({"error": "id: required"}, status=400)
    try:
        aborted = await ctx.api.call(
            "AbortInjection", pb.AbortInjectionRequest(id=injection_id, reason=REASON), session
        )
    except ApiRefused as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    return web.json_response({"injection": as_json(aborted)})


async def abort_all(request: web.Request) -> web.StreamResponse:
    """POST /actions/abort-all: freeze first (nothing new starts meanwhile), then abort
    every live injection; returns the freeze and every aborted injection."""
    ctx, session = context_of(request), request[SESSION]
    fields = await fields_of(request)
    reason = str(fields.get("reason", "")).strip() or REASON
    try:
        freeze = await ctx.api.call("Freeze", pb.FreezeRequest(reason=reason), session)
        reply = await ctx.api.call(
            "AbortAllInjections", pb.AbortAllInjectionsRequest(reason=reason), session
        )
    except ApiRefused as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    return web.json_response(
        {"freeze": as_json(freeze), "aborted": [as_json(i) for i in reply.aborted]}
    )


async def fields_of(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise web.HTTPBadRequest(text="body: not JSON") from None
        return body if isinstance(body, dict) else {}
    return dict(await request.post())


def _safe_next(target: str) -> str:
    """Only a path on this site (never `//host` or `https://host`): no open redirect."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc:
        return "/"
    return target


def _login_form(request: web.Request, error: str, status: int) -> web.Response:
    template = context_of(request).templates.get_template("login.html")
    text = template.render(error=error, next=_safe_next(request.query.get("next", "/")))
    return web.Response(text=text, status=status, content_type="text/html")
