"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a
real control server and a real Envoy mesh under load: log in with a token, see a new
experiment on Now within a second of CreateInjection, open it, watch its SLO chart
grow, press Abort, confirm, and see ABORTED with every target's ACK; then the targets'
own traffic shows the fault is gone.

Screenshots of every step go to the test's temp dir; with FAULTPLANE_DOCS_SCREENSHOTS=1
the Now page's is also copied to docs/dashboard-now.png (the README's picture).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from faultplane.auth.tokens import new_token, token_hash
from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer
from faultplane.store import NewToken
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT, server_config
from tests.helpers import injection_request, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run",
]  # fmt: skip
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard-now.png"
TICK = 0.5
# 30 % of merchant writes into two of the three south-1 payments-api pods fail with 503;
# the guard reads merchant-write-success against a min the test never breaches.
REQUEST = injection_request(
    target={
        "service": "payments-api",
        "selector": "shard=south-1",
        "max_pods": 2,
        "upstream": None,
    },
    fault={"type": "abort", "http_status": 503, "percentage": 30},
    duration_seconds=600,
    steady_state={"slo": "merchant-write-success", "min": 0.5, "abort_after": 30},
    hypothesis="30% 503s on payments-api south-1 keep merchant writes above 50%",
    owner="ananya",
)
JS_BUDGET_BYTES = 300 * 1024


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    """The demo mesh under load; sidecars configured by a first server before load."""
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    mesh = dataclasses.replace(mesh, load=dataclasses.replace(mesh.load, rate_per_second=30))
    bootstrap = ControlServer(server_config(mesh))
    await bootstrap.start()
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), mesh=mesh, spawn_server=False
    ) as run:
        await bootstrap.stop(grace=0)
        yield run


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    mesh_run: MeshRun, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ControlServer]:
    """Token auth, the guard, and the dashboard on a free loopback port."""
    assert mesh_run.mesh is not None
    db = tmp_path_factory.mktemp("store") / "faultplane.db"
    config = server_config(
        mesh_run.mesh, auth="token", web_port=0, db_path=db, guard_tick=TICK, deadman_ttl=5.0
    )
    control = ControlServer(config)
    await control.start()
    pods = len(mesh_run.mesh.pods)
    await wait_until(
        lambda: _connected(control, pods), 30, "sidecars to reconnect to the test's server"
    )
    try:
        yield control
    finally:
        await control.scheduler.abort_all("test cleanup", "test")
        await control.stop(grace=0)


async def _connected(server: ControlServer, count: int) -> bool:
    sidecars = server.registry.sidecars()
    return sum(s.connected for s in sidecars) == count


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def issue(server: ControlServer, principal: str, role: str) -> str:
    token_id, token = new_token()
    server.store.tokens.add(NewToken(token_id, principal, role, token_hash(token), time.time()))
    return token


async def shoot(page: Page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def _at_least(count: Callable[[], Awaitable[int]], least: int) -> bool:
    return await count() >= least


async def faulted_share(mesh_run: MeshRun, targets: list[str], count: int = 60) -> float:
    """The share of merchant writes sent straight to the targets' ingress that got 503."""
    assert mesh_run.mesh is not None
    pods = [p for p in mesh_run.mesh.pods if p.name in targets]
    replies = []
    for pod in pods:
        url = f"http://127.0.0.1:{pod.ports.ingress}/merchant-write"
        replies += await send(url, count, method="POST", concurrency=10)
    return sum(r.status == 503 for r in replies) / len(replies)


async def test_log_in_watch_an_experiment_go_live_and_abort_it_from_the_browser(
    server: ControlServer, mesh_run: MeshRun, browser: Browser, tmp_path: Path
) -> None:
    assert server.web is not None
    base = server.web.url.rstrip("/")
    token = issue(server, "ananya", "operator")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    scripts: dict[str, int] = {}
    page.on("response", lambda r: scripts.setdefault(r.url, 0) if r.url.endswith(".js") else None)

    # Log in: no session, so the login page; the token is the CLI's.
    await page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    await page.get_by_label("API token").fill(token)
    await shoot(page, shots, "01-login")
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/")
    await page.get_by_text("No experiment is live").wait_for()
    await shoot(page, shots, "02-now-empty")

    # CreateInjection: the experiment is on Now within a second (the watch stream).
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")]
        created = await stub.CreateInjection(REQUEST, metadata=metadata, timeout=30)
        called = time.monotonic()
        card = page.locator(f'article[data-id="{created.id}"]')
        await card.wait_for(timeout=5000)
        appeared = time.monotonic() - called
        assert appeared < 1.0, f"the experiment reached Now {appeared:.2f} s after the call"
    await page.locator(f'article[data-id="{created.id}"][data-state="ACTIVE"]').wait_for()
    await card.locator(".guard", has_text=re.compile("within|BREACH")).wait_for(timeout=10_000)
    text = await card.inner_text()
    for expected in ("ananya", "2 of 3 matched sidecars", "abort", "payments-api", "30%"):
        assert expected in text, (expected, text)
    now_shot = await shoot(page, shots, "03-now-live")
    if os.environ.get("FAULTPLANE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(now_shot, DOCS_SCREENSHOT)
    targets = list(created.targets)
    assert await faulted_share(mesh_run, targets) > 0.1  # the fault is really there

    # The experiment page: its chart grows as the guard reads.
    await card.get_by_role("link", name=created.id).click()
    await page.wait_for_url(f"{base}/experiments/{created.id}")
    chart = page.locator("#chart")

    async def points() -> int:  # readings drawn (the page's CSP forbids evaluated JS)
        return int(await chart.get_attribute("data-points") or 0)

    await wait_until(lambda: _at_least(points, 1), 10, "the first reading on the chart")
    first = await points()
    await wait_until(lambda: _at_least(points, first + 1), 10, "the chart to update")
    assert await page.locator("#chart canvas").count() == 1
    await shoot(page, shots, "04-experiment-live")

    # Abort, confirm, and the answer: ABORTED with every target's ACK of the withdrawal.
    await page.get_by_role("button", name=f"Abort {created.id}").click()
    dialog = page.locator("dialog#confirm")
    await dialog.wait_for()
    assert created.id in await dialog.inner_text()
    await shoot(page, shots, "05-confirm")
    await dialog.get_by_role("button", name=f"Abort {created.id}").click()
    await page.locator("#state", has_text="ABORTED").wait_for(timeout=30_000)
    result = page.locator("#result")
    await result.locator("li[data-outcome]").first.wait_for()
    acked = await result.locator('li[data-outcome="acked"]').all_inner_texts()
    assert {t.split()[1] for t in acked} == set(targets)  # each ACKed the withdrawal
    assert await result.locator('li[data-outcome]:not([data-outcome="acked"])').count() == 0
    await shoot(page, shots, "06-aborted")

    # The sidecars' own traffic: no more 503s on the targets.
    assert await faulted_share(mesh_run, targets) == 0.0

    # History and the audit show it, under the user who pressed the button.
    await page.goto(f"{base}/history?owner=ananya")
    await page.get_by_role("link", name=created.id).wait_for()
    await page.goto(f"{base}/audit?injection={created.id}")
    assert "Chain verified" in await page.locator("#chain").inner_text()
    rows = await page.locator("#audit tbody tr").all_inner_texts()
    assert any("AbortInjection" in r and "ananya" in r and "OK" in r for r in rows)
    await shoot(page, shots, "07-audit")

    # Abort all + freeze from Now: the confirmation names what it stops; then the banner.
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        second = await stub.CreateInjection(REQUEST, metadata=metadata, timeout=30)
    await page.goto(f"{base}/")
    await page.locator(f'article[data-id="{second.id}"]').wait_for()
    await page.locator("#abort-all").click()
    await dialog.wait_for()
    assert second.id in await dialog.inner_text()
    await dialog.get_by_role("button", name="Abort all + freeze").click()
    await result.locator(f'a[href="/experiments/{second.id}"]').wait_for(timeout=30_000)
    assert "ABORTED" in await result.inner_text()
    banner = page.locator("#banner")
    await banner.get_by_text("FROZEN").wait_for()
    await page.get_by_text("No experiment is live").wait_for()
    await shoot(page, shots, "08-abort-all-frozen")

    # JavaScript's first load stays small, and a phone-width Now page still reads.
    sizes = []
    for url in scripts:
        reply = await page.request.get(url)
        sizes.append(len(await reply.body()))
    assert 0 < sum(sizes) < JS_BUDGET_BYTES, dict(zip(scripts, sizes, strict=True))
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{base}/")
    await page.get_by_text("No experiment is live").wait_for()
    assert await banner.is_visible()  # the freeze, from the stream's first snapshot
    await shoot(page, shots, "09-now-phone")
    await page.close()


async def test_the_queue_on_now_and_its_own_page_and_a_live_experiments_plan(
    server: ControlServer, mesh_run: MeshRun, browser: Browser, tmp_path: Path
) -> None:
    """A second experiment on the first one's sidecars waits QUEUED: Now shows why and
    when it starts, the queue page shows the timeline and redraws it, live, when the
    first ends and the second starts; the live one's page shows what each target got."""
    assert server.web is not None
    base = server.web.url.rstrip("/")
    token, admin = issue(server, "ananya", "operator"), issue(server, "root", "admin")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")]
        # The first test may have left the abort-all freeze on.
        await stub.Unfreeze(pb.UnfreezeRequest(), metadata=[("authorization", f"Bearer {admin}")])
        first = await stub.CreateInjection(REQUEST, metadata=metadata, timeout=30)
        queued_request = pb.InjectionRequest()
        queued_request.CopyFrom(REQUEST)
        queued_request.on_conflict = pb.ON_CONFLICT_QUEUE
        second = await stub.CreateInjection(queued_request, metadata=metadata, timeout=30)
        assert second.state == pb.QUEUED

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{base}/login")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(f"{base}/")
        card = page.locator(f'#queued article[data-id="{second.id}"]')
        await card.wait_for()
        assert first.id in await card.locator(".waiting").inner_text()  # why it waits
        assert "expected to start" in await card.locator(".starts").inner_text()
        assert await card.get_by_role("button", name=f"Abort {second.id}").is_visible()
        await shoot(page, shots, "10-now-queued")

        await page.goto(f"{base}/queue")
        row = page.locator(f'#queue tr[data-id="{second.id}"]')
        await row.wait_for()
        assert await row.get_attribute("data-status") == "starts"
        running = page.locator(f'#queue tr[data-id="{first.id}"][data-status="running"]')
        await running.wait_for()
        await shoot(page, shots, "11-queue")
        await stub.AbortInjection(pb.AbortInjectionRequest(id=first.id), metadata=metadata)
        # No reload: the stream redraws the timeline once the second has started.
        await page.locator(f'#queue tr[data-id="{second.id}"][data-status="running"]').wait_for(
            timeout=20_000
        )
        assert await page.locator(f'#queue tr[data-id="{first.id}"]').count() == 0
        await shoot(page, shots, "12-queue-moved")
        get = pb.GetInjectionRequest(id=second.id)
        live = await stub.GetInjection(get, metadata=metadata, timeout=30)

    assert live.targets  # chosen when it started
    await page.goto(f"{base}/experiments/{second.id}")
    plans = page.locator("details.plan")
    assert sorted(await plans.evaluate_all("ns => ns.map(n => n.dataset.sidecar)")) == sorted(
        live.targets
    )
    assert "http_status" in (await plans.first.locator("pre").text_content() or "")
    await shoot(page, shots, "13-experiment-plan")

    # Accessibility basics on every page: each control a real, named button or a
    # labelled field.
    for path in ("/", "/queue", f"/experiments/{second.id}", "/history", "/audit", "/sidecars"):
        await page.goto(base + path)
        for button in await page.locator("button:visible").all():
            assert (await button.inner_text()).strip(), path
        fields = page.locator("input:not([type=hidden]), select")
        assert await fields.count() == await page.locator("label input, label select").count()
        assert await page.locator("[onclick], div[role=button], a[href='#']").count() == 0

    # A phone: every card fits the screen's width.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{base}/")
    await page.locator(f'article[data-id="{second.id}"]').wait_for()
    for box in [await c.bounding_box() for c in await page.locator("article.card").all()]:
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    await shoot(page, shots, "14-now-phone-live")
    await page.close()
