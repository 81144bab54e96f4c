"""The scheduler on the dashboard in a real browser (Debian's Chromium via Playwright,
the browser fixture of test_web_dashboard) against a real control server over loopback:
a blackout added now appears as a banner on Now without a reload, and goes when it is
removed; one beginning within the hours ahead is listed on the queue page; the schedules
page pauses a schedule through its confirmation and shows another's resume by itself.
No Envoy: nothing here sends a fault.
"""

# ruff: noqa: F811 (`browser` is a fixture imported from test_web_dashboard)
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from faultplane.demo.ports import PortAllocator
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, server_config
from tests.test_governance import request_by
from tests.test_web_dashboard import browser, issue, shoot  # noqa: F401 (a fixture)
from tests.test_web_schedules import one_off, stamp

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlServer]:
    """Token auth and the dashboard on free loopback ports; no sidecar needed."""
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    db = tmp_path_factory.mktemp("store") / "faultplane.db"
    control = ControlServer(server_config(mesh, auth="token", web_port=0, db_path=db))
    await control.start()
    try:
        yield control
    finally:
        await control.stop(grace=0)


async def log_in(page: Page, base: str, token: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/")


async def test_a_blackout_banner_comes_and_goes_live_and_a_schedule_is_paused(
    server: ControlServer, browser: Browser, tmp_path: Path
) -> None:
    assert server.web is not None
    base = server.web.url.rstrip("/")
    token = issue(server, "ananya", "operator")
    metadata = [("authorization", f"Bearer {token}")]
    admin = [("authorization", f"Bearer {issue(server, 'root', 'admin')}")]
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, base, token)
    await page.get_by_text("No experiment is live").wait_for()  # the stream's snapshot
    banner = page.locator('#banner [data-banner="blackout"]')
    assert await banner.count() == 0
    now = datetime.now(UTC)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.config.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        # A one-off blackout covering now: on Now, named with its end, without a reload.
        settlement = one_off(
            "month-end settlement", now - timedelta(minutes=1), now + timedelta(hours=1)
        )
        added = await stub.AddBlackout(settlement, metadata=metadata, timeout=30)
        await banner.wait_for(timeout=10_000)
        text = await banner.inner_text()
        assert "BLACKOUT" in text and "month-end settlement" in text, text
        assert added.end.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in text
        await shoot(page, tmp_path, "01-now-blackout")
        await stub.RemoveBlackout(pb.RemoveBlackoutRequest(id=added.id), metadata=admin)
        await banner.wait_for(state="detached", timeout=10_000)
        assert await page.locator("#banner").is_hidden()

        # One beginning within the next hours: listed ahead on the queue page.
        deploy = one_off("deploy freeze", now + timedelta(hours=2), now + timedelta(hours=3))
        ahead = await stub.AddBlackout(deploy, metadata=metadata, timeout=30)
        await page.goto(f"{base}/queue")
        item = page.locator(f'#blackouts-ahead li[data-blackout="{ahead.id}"]')
        await item.wait_for(timeout=10_000)
        assert "deploy freeze" in await item.inner_text()
        assert await banner.count() == 0  # not in effect yet
        await shoot(page, tmp_path, "02-queue-blackout-ahead")

        # The schedules page: Pause, confirmed, and the row says paused.
        request = pb.CreateScheduleRequest(
            experiment=request_by("ananya", duration_seconds=60),
            every="1h",
            start=stamp(now + timedelta(hours=1)),  # nothing fires during the test
            name="hourly-check",
        )
        schedule = await stub.CreateSchedule(request, metadata=metadata, timeout=30)
    await page.goto(f"{base}/schedules")
    row = page.locator(f'#schedules tr[data-id="{schedule.id}"]')
    assert await row.get_attribute("data-paused") == "no"
    assert "deploy freeze" in await page.locator("#blackouts").inner_text()
    await page.get_by_role("button", name=f"Pause {schedule.id}").click()
    dialog = page.locator("dialog#confirm")
    await dialog.wait_for()
    assert schedule.id in await dialog.inner_text()
    await dialog.get_by_role("button", name=f"Pause {schedule.id}").click()
    paused = page.locator(f'#schedules tr[data-id="{schedule.id}"][data-paused="yes"]')
    await paused.wait_for(timeout=10_000)  # the page read again after the call
    assert "⏸ paused" in await paused.inner_text()
    assert await paused.get_by_role("button", name=f"Resume {schedule.id}").is_visible()
    await shoot(page, tmp_path, "03-schedules-paused")

    # Accessibility basics: real, named buttons; every field labelled; no fake buttons.
    for button in await page.locator("button:visible").all():
        assert (await button.inner_text()).strip()
    fields = page.locator("input:not([type=hidden]), select")
    assert await fields.count() == await page.locator("label input, label select").count()
    assert await page.locator("[onclick], div[role=button], a[href='#']").count() == 0

    # Someone else resumes it (the CLI, here its API call): the page shows it, no reload
    # pressed (the stream's scheduling event reads the page again).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.config.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        resume = pb.ScheduleIdRequest(id=schedule.id)
        await stub.ResumeSchedule(resume, metadata=metadata, timeout=30)
    await page.locator(f'#schedules tr[data-id="{schedule.id}"][data-paused="no"]').wait_for(
        timeout=10_000
    )
    await page.close()
