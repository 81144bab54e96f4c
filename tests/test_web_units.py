"""The dashboard's pure pieces: history filters, the login redirect, sessions, and the
configurations refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from faultplane.auth.principal import LOCAL_PRINCIPAL
from faultplane.cli.main import build_parser
from faultplane.model.mesh import Mesh
from faultplane.server.config import TlsConfig
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.actions import _safe_next
from faultplane.web.app import api_loopback
from faultplane.web.history import Filters
from faultplane.web.sessions import SessionStore
from tests.conftest import server_config


def injection(owner: str, verdict: str, created: float) -> pb.Injection:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(created * 1e9))
    return pb.Injection(owner=owner, verdict=verdict, created_at=stamp)


def test_history_filters_by_owner_verdict_and_utc_day() -> None:
    filters = Filters.parse({"owner": "ananya", "verdict": "refuted", "from": "2026-12-03",
                             "to": "2026-12-03"})  # fmt: skip
    day = 1796256000.0  # 2026-12-03 00:00 UTC
    assert filters.matches(injection("ananya", "hypothesis refuted: breach", day + 3600))
    assert not filters.matches(injection("ananya", "hypothesis held", day + 3600))
    assert not filters.matches(injection("bob", "hypothesis refuted", day + 3600))
    assert not filters.matches(injection("ananya", "hypothesis refuted", day - 1))
    assert not filters.matches(injection("ananya", "hypothesis refuted", day + 86400))


@pytest.mark.parametrize(
    ("query", "message"),
    [({"from": "03/12/2026"}, "from: not a date"), ({"verdict": "maybe"}, "verdict: must be")],
)
def test_history_filters_name_the_bad_field(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Filters.parse(query)


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/experiments/inj-1?x=1", "/experiments/inj-1?x=1"), ("//evil.example/", "/"),
     ("https://evil.example/", "/"), ("", "/"), ("audit", "/")],
)  # fmt: skip
def test_login_redirects_only_to_this_site(target: str, safe: str) -> None:
    assert _safe_next(target) == safe


def test_sessions_are_forgotten_when_idle_and_on_logout() -> None:
    sessions = SessionStore(idle_seconds=0.0)
    idle = sessions.create(LOCAL_PRINCIPAL, None)
    assert sessions.get(idle.id) is None  # idle longer than 0 s
    kept = SessionStore().create(LOCAL_PRINCIPAL, "fpt_x")
    assert kept.csrf_ok(kept.csrf) and not kept.csrf_ok("") and not kept.csrf_ok(None)
    store = SessionStore()
    session = store.create(LOCAL_PRINCIPAL, None)
    assert store.get(session.id) is session
    store.drop(session.id)
    assert store.get(session.id) is None


def test_the_dashboard_reaches_an_api_on_every_interface_over_loopback() -> None:
    assert api_loopback("0.0.0.0", 18001) == "127.0.0.1:18001"
    assert api_loopback("::", 18001) == "[::1]:18001"
    assert api_loopback("127.0.0.2", 18001) == "127.0.0.2:18001"


def test_local_mode_keeps_the_dashboard_on_loopback(mesh: Mesh) -> None:
    with pytest.raises(ValueError, match=r"local mode .* binds only to loopback, not '0\.0\.0\.0'"):
        server_config(mesh, auth="local", web_port=0, web_host="0.0.0.0")


def test_the_dashboard_is_refused_beside_a_tls_api(mesh: Mesh, tmp_path: Path) -> None:
    tls = TlsConfig(tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(ValueError, match=r"web_port \(--web-listen\).*--tls-cert"):
        server_config(mesh, auth="token", web_port=0, tls=tls)


def test_serve_refuses_a_web_listen_that_is_not_host_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--web-listen", "dashboard:80"])
    assert exited.value.code == 2
    assert "--web-listen: 'dashboard' is not an IP address or localhost" in capsys.readouterr().err
