"""The Prometheus SLO source against a tiny HTTP server standing in for Prometheus: any
reply it cannot use is an unreadable reading (a breach for the guard), never an exception
that would escape into the guard's tick."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import HttpClient, PrometheusSource, Reading

SLO = SloDef(name="pay-ok-prom", service="payments-api", source="prometheus", window_seconds=30)
PODS = ["payments-api-1", "payments-api-2"]


@dataclass
class FakePrometheus:
    body: str = ""
    content_type: str = "application/json"
    url: str = ""

    async def api(self, request: web.Request) -> web.Response:
        return web.Response(text=self.body, content_type=self.content_type)


@pytest.fixture
async def prometheus() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/{endpoint}", fake.api)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield fake
    finally:
        await runner.cleanup()


def _success(data: object) -> str:
    return json.dumps({"status": "success", "data": data})


async def test_a_well_formed_reply_reads(prometheus: FakePrometheus) -> None:
    prometheus.body = _success({"resultType": "vector", "result": [{"value": [1, "0.97"]}]})
    http = HttpClient()
    try:
        reading = await PrometheusSource(prometheus.url, http).read(SLO, PODS)
    finally:
        await http.close()
    assert reading.readable and reading.value == pytest.approx(0.97)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_success({}), id="no-result"),
        pytest.param(_success({"result": [{}]}), id="no-value"),
        pytest.param(_success({"result": [{"value": [1]}]}), id="short-value"),
        pytest.param(_success({"result": [{"value": [1, "abc"]}]}), id="not-a-number"),
        pytest.param(_success({"result": [{"value": [1, None]}]}), id="null-value"),
        pytest.param(_success(None), id="null-data"),
        pytest.param(json.dumps([1, 2]), id="a-list"),
        pytest.param(json.dumps(None), id="null"),
        pytest.param("{not json", id="not-json"),
    ],
)
async def test_a_malformed_reply_is_unreadable(prometheus: FakePrometheus, body: str) -> None:
    prometheus.body = body
    http = HttpClient()
    try:
        source = PrometheusSource(prometheus.url, http)
        reading = await source.read(SLO, PODS)
        history = await source.history(SLO, PODS, seconds=60, step=5)
    finally:
        await http.close()

    assert reading.value is None and not reading.readable
    assert reading.error.startswith("prometheus"), reading.error
    assert isinstance(history, Reading) and history.error.startswith("prometheus"), history
