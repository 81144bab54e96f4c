"""The dashboard's door: no session, no page (the login page instead); no CSRF token, no
action; and the headers that keep pages out of frames and scripts to our own files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from faultplane.web.context import context_of
from faultplane.web.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION, Session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = ("/login", "/static/")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def set_session_cookie(response: web.StreamResponse, session: Session, secure: bool) -> None:
    response.set_cookie(
        COOKIE, session.id, httponly=True, samesite="Strict", secure=secure, path="/"
    )


def wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/events", "/actions/", "/api/")) or (
        "application/json" in request.headers.get("Accept", "")
    )


def refuse(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": message}, status=status)
    return web.Response(status=status, text=message)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:  # an event stream has sent its headers already
        response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the session, or answer for its absence: local mode makes one (there is one
    user, the local admin); otherwise pages go to the login page and the rest get 401.
    Every POST must carry the session's CSRF token (header or form field) or gets 403."""
    if request.path.startswith(PUBLIC):
        return await handler(request)
    ctx = context_of(request)
    session = ctx.sessions.get(request.cookies.get(COOKIE))
    created = None
    if session is None:
        if not ctx.local:
            if wants_json(request):
                return refuse(request, 401, "not logged in: log in at /login")
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        session = created = ctx.sessions.create(await ctx.whoami(None), None)
    if request.method == "POST" and not await _csrf_ok(request, session):
        return refuse(request, 403, "csrf: missing or wrong CSRF token; reload the page")
    request[SESSION] = session
    response = await handler(request)
    if response.status == 401 and not ctx.local:  # the API no longer takes the token
        ctx.sessions.drop(session.id)  # (revoked): the next page is the login page
        if not wants_json(request):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    if created is not None and not response.prepared:
        set_session_cookie(response, created, request.secure)
    return response


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        presented = str((await request.post()).get(CSRF_FIELD, "")) or None
    return session.csrf_ok(presented)
