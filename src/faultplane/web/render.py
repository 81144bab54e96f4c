"""Server-side HTML: one jinja2 environment (autoescaped), the filters pages share, and
what every page knows about its viewer (name, role, CSRF token, whether they may stop)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2
from aiohttp import web
from google.protobuf import timestamp_pb2

from faultplane.auth.roles import may_call
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.context import context_of
from faultplane.web.sessions import SESSION


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("faultplane.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ts"] = timestamp_text
    env.filters["state"] = lambda value: pb.State.Name(value)
    return env


def timestamp_text(stamp: timestamp_pb2.Timestamp | float | None) -> str:
    """UTC to the second, as the CLI prints it; unset is a dash, never 1970."""
    if isinstance(stamp, timestamp_pb2.Timestamp):
        if stamp.seconds == 0 and stamp.nanos == 0:
            return "—"
        seconds = stamp.seconds + stamp.nanos / 1e9
    elif stamp:
        seconds = float(stamp)
    else:
        return "—"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    ctx, session = context_of(request), request[SESSION]
    principal = session.principal
    text = ctx.templates.get_template(template).render(
        viewer=principal.name,
        role=principal.role.value,
        may_stop=may_call(principal.role, "AbortInjection"),
        csrf=session.csrf,
        local=ctx.local,
        path=request.path,
        **values,
    )
    return web.Response(text=text, status=status, content_type="text/html")
