"""The dashboard's routes, and the server that runs them beside the control server.

Built from the control server's parts: the API address it calls (over loopback), the
authenticator that names a token's principal and role for the page header (the API
decides what they may do), and the scheduler's memory for each live injection's last
reading when a Now page connects.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from faultplane.auth.principal import Principal
from faultplane.server.config import listen_address
from faultplane.server.parts import Parts
from faultplane.web import actions, audit, events, history, pages, schedules
from faultplane.web.client import ApiClient
from faultplane.web.context import CONTEXT, WebContext
from faultplane.web.guard import require_session, security_headers
from faultplane.web.render import environment
from faultplane.web.sessions import SessionStore

log = structlog.get_logger("faultplane.web")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024  # a login or an abort is a few hundred bytes
STOP_SECONDS = 2.0  # open event streams are ended, not waited for


def build_app(ctx: WebContext) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, require_session], client_max_size=MAX_BODY_BYTES
    )
    app[CONTEXT] = ctx
    routes = app.router
    routes.add_get("/login", actions.login_page)
    routes.add_post("/login", actions.login)
    routes.add_post("/logout", actions.logout)
    routes.add_get("/", pages.now)
    routes.add_get("/experiments/{id}", pages.experiment)
    routes.add_get("/sidecars", pages.sidecars)
    routes.add_get("/queue", pages.queue)
    routes.add_get("/schedules", schedules.schedules)
    routes.add_get("/history", history.history)
    routes.add_get("/audit", audit.audit)
    routes.add_get("/events", events.stream)
    routes.add_post("/actions/abort", actions.abort)
    routes.add_post("/actions/abort-all", actions.abort_all)
    routes.add_post("/actions/schedule", schedules.schedule_action)
    routes.add_static("/static/", STATIC)
    return app


def api_loopback(host: str, port: int) -> str:
    """Where the dashboard reaches the API: the API's own host, or loopback when it
    listens on every interface."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return listen_address(host, port)


class WebServer:
    def __init__(self, parts: Parts, api_port: int) -> None:
        config = parts.config
        assert config.web_port is not None
        self.host, self._port = config.web_host, config.web_port
        self.port = 0
        self._api = ApiClient(api_loopback(config.api_host, api_port))
        authenticator = parts.gate.authenticator

        async def whoami(token: str | None) -> Principal:
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return await parts.journal.read(authenticator.authenticate, metadata, {})

        context = WebContext(
            api=self._api,
            sessions=SessionStore(),
            view=parts.scheduler,
            whoami=whoami,
            templates=environment(),
            local=config.auth == "local",
        )
        self._runner = web.AppRunner(
            build_app(context), access_log=None, shutdown_timeout=STOP_SECONDS
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        server = site._server  # the bound port, when 0 asked for a free one
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        log.info("dashboard started", url=self.url)

    async def stop(self) -> None:
        await self._api.close()  # ends every open event stream's watch
        await self._runner.cleanup()
