"""The dashboard's door, against a real control server (token auth, fake sidecars ACKing
over real ADS) and its real dashboard over HTTP: no session means the login page, a
POST without the session's CSRF token changes nothing, a viewer cannot abort because
the role table says so (the API refuses it, not the page), and every dashboard action is
in the audit under the user who pressed the button.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from faultplane.model.mesh import Mesh
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from tests.conftest import server_config
from tests.helpers import wait_state
from tests.test_governance import Api, Start, _As, audit_entries, request_by, start  # noqa: F401
from tests.test_web_mesh_up import first_event

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def dashboard(start: Start, **config: object) -> tuple[Api, str]:  # noqa: F811
    api = await start(web_port=0, **config)
    assert api.server.web is not None
    return api, api.server.web.url.rstrip("/")


@asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's default jar ignores IPs)."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


async def log_in(session: aiohttp.ClientSession, base: str, token: str) -> str:
    """Logs in; returns the CSRF token the Now page carries."""
    async with session.post(f"{base}/login", data={"token": token, "next": "/"}) as reply:
        assert reply.status == 200 and reply.url.path == "/", await reply.text()
        found = CSRF.search(await reply.text())
    assert found is not None
    return found.group(1)


async def live_injection(api: Api) -> str:
    created = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")
    await wait_state(_As(api, "alice"), created.id, {pb.ACTIVE})
    return created.id


async def state_of(api: Api, injection_id: str) -> int:
    reply = await api.call("GetInjection", pb.GetInjectionRequest(id=injection_id), "root")
    return reply.state


async def test_without_a_session_pages_go_to_the_login_page_and_the_rest_is_401(
    start: Start,  # noqa: F811
) -> None:
    _api, base = await dashboard(start)
    async with browser() as session:
        for path in ("/", "/experiments/inj-x", "/history", "/audit", "/sidecars"):
            async with session.get(base + path) as reply:
                assert reply.status == 200 and reply.url.path == "/login", path
                assert 'name="token"' in await reply.text()
        async with session.get(f"{base}/events") as reply:
            assert reply.status == 401
        async with session.post(f"{base}/actions/abort", json={"id": "x"}) as reply:
            assert reply.status == 401


async def test_a_refused_token_stays_on_the_login_page_and_the_api_audits_it(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    bogus = "fpt_" + "0" * 16 + "_" + "1" * 64
    async with browser() as session, session.post(f"{base}/login", data={"token": bogus}) as reply:
        assert reply.status == 401
        assert "token refused" in await reply.text()
        assert not session.cookie_jar.filter_cookies(base)
    refused = [e for e in await audit_entries(api) if e.get("outcome") == "UNAUTHENTICATED"]
    assert [e["method"] for e in refused] == ["GetFreeze"]


async def test_the_session_cookie_is_httponly_and_samesite_strict(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    async with aiohttp.ClientSession() as session:
        form = {"token": api.tokens["alice"]}
        async with session.post(f"{base}/login", data=form, allow_redirects=False) as reply:
            assert reply.status == 303
            cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert api.tokens["alice"] not in cookie  # the token stays on the server


async def test_an_abort_without_the_csrf_token_is_refused_and_changes_nothing(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    injection_id = await live_injection(api)
    async with browser() as session:
        await log_in(session, base, api.tokens["alice"])
        url = f"{base}/actions/abort"
        async with session.post(url, json={"id": injection_id}) as reply:
            assert reply.status == 403
            assert "csrf" in (await reply.json())["error"]
        wrong = {"X-CSRF-Token": "not-the-token"}
        async with session.post(url, json={"id": injection_id}, headers=wrong) as reply:
            assert reply.status == 403
        async with session.post(f"{base}/actions/abort-all", data={"id": injection_id}) as reply:
            assert reply.status == 403
    assert await state_of(api, injection_id) == pb.ACTIVE
    methods = {e.get("method") for e in await audit_entries(api)}
    assert not methods & {"AbortInjection", "AbortAllInjections", "Freeze"}


async def test_a_viewer_gets_no_abort_button_and_the_api_refuses_their_abort(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    injection_id = await live_injection(api)
    async with browser() as session:
        csrf = await log_in(session, base, api.tokens["vic"])
        async with session.get(f"{base}/") as reply:
            page = await reply.text()
        assert 'data-may-stop="no"' in page and 'id="abort-all"' not in page
        headers = {"X-CSRF-Token": csrf}
        async with session.post(
            f"{base}/actions/abort", json={"id": injection_id}, headers=headers
        ) as reply:
            assert reply.status == 403
            assert "role viewer may not call AbortInjection" in (await reply.json())["error"]
    assert await state_of(api, injection_id) == pb.ACTIVE
    (refused,) = [e for e in await audit_entries(api) if e.get("method") == "AbortInjection"]
    assert (refused["principal"], refused["outcome"]) == ("vic", "PERMISSION_DENIED")


async def test_every_dashboard_action_is_in_the_audit_under_its_user(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    first = await live_injection(api)
    async with browser() as alice:
        csrf = await log_in(alice, base, api.tokens["alice"])
        async with alice.post(
            f"{base}/actions/abort", json={"id": first}, headers={"X-CSRF-Token": csrf}
        ) as reply:
            assert reply.status == 200
            aborted = (await reply.json())["injection"]
    assert aborted["state"] == "ABORTED"
    withdrawal = aborted["transitions"][-1]["evidence"]
    assert {e["sidecar"] for e in withdrawal} == set(aborted["targets"])
    assert {e["outcome"] for e in withdrawal} == {"acked"}

    second = await live_injection(api)
    async with browser() as bob:
        csrf = await log_in(bob, base, api.tokens["bob"])
        async with bob.post(
            f"{base}/actions/abort-all",
            json={"reason": "incident 42"},
            headers={"X-CSRF-Token": csrf},
        ) as reply:
            assert reply.status == 200
            body = await reply.json()
    assert [i["id"] for i in body["aborted"]] == [second] and body["freeze"]["frozen"]
    async with browser() as vic:  # anyone's live pages now carry the freeze (the banner)
        await log_in(vic, base, api.tokens["vic"])
        name, snapshot = await first_event(vic, f"{base}/events")
    assert name == "snapshot" and snapshot["injections"] == []
    assert snapshot["freeze"]["frozen"] and snapshot["freeze"]["by"] == "bob"

    calls = [
        (e["method"], e["principal"], e["outcome"])
        for e in await audit_entries(api)
        if e.get("kind") == "call"
        and e["method"] in {"AbortInjection", "AbortAllInjections", "Freeze"}
    ]
    assert calls == [
        ("AbortInjection", "alice", "OK"),
        ("Freeze", "bob", "OK"),
        ("AbortAllInjections", "bob", "OK"),
    ]
    logins = {e["principal"] for e in await audit_entries(api) if e.get("method") == "GetFreeze"}
    assert {"alice", "bob"} <= logins


async def test_local_mode_needs_no_login_but_still_needs_the_csrf_token(mesh: Mesh) -> None:
    server = ControlServer(server_config(mesh, auth="local", web_port=0))
    await server.start()
    try:
        assert server.web is not None
        base = server.web.url.rstrip("/")
        async with browser() as session:
            async with session.get(f"{base}/") as reply:
                assert reply.status == 200 and reply.url.path == "/"
                assert "local · admin" in await reply.text()
            async with session.post(f"{base}/actions/abort-all", json={}) as reply:
                assert reply.status == 403
            async with session.get(f"{base}/login") as reply:  # nothing to log in to
                assert reply.url.path == "/"
    finally:
        await server.stop(grace=0)


async def test_the_sidecars_page_lists_every_connected_sidecar_with_its_acked_versions(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    async with browser() as session:
        await log_in(session, base, api.tokens["vic"])
        async with session.get(f"{base}/sidecars?service=payments-api") as reply:
            page = await reply.text()
    for pod in ("payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"):
        assert f"<code>{pod}</code>" in page
    assert page.count("✔ connected") == 4 and "✖ disconnected" not in page


async def test_a_revoked_token_ends_the_session_at_its_next_api_call(
    start: Start,  # noqa: F811
) -> None:
    api, base = await dashboard(start)
    async with browser() as session:
        await log_in(session, base, api.tokens["alice"])
        token_id = api.tokens["alice"].split("_")[1]
        assert api.server.store.tokens.revoke(token_id)
        async with session.get(f"{base}/history") as reply:
            assert reply.url.path == "/login"
        async with session.get(f"{base}/events") as reply:
            assert reply.status == 401  # the session is gone, not just this call refused
