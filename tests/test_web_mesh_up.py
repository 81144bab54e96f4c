"""`faultplane mesh up` turns the dashboard on and prints its address; there (local mode:
one local admin, no login) a live experiment is on the event stream's first snapshot and
an Abort pressed on the page withdraws it from every target."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import grpc

from faultplane.cli.connection import fault_stub
from faultplane.demo.processes import wait_until
from faultplane.v1 import faultplane_pb2 as pb
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import injection_request, wait_state
from tests.test_mesh_up import FAULTPLANE, _exists, kill_all, state_pids

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def first_event(session: aiohttp.ClientSession, url: str) -> tuple[str, dict]:
    """The first server-sent event of a stream: its name and data."""
    async with session.get(url) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        name, data = "", ""
        async for line in reply.content:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text.removeprefix("event: ")
            elif text.startswith("data: "):
                data = text.removeprefix("data: ")
            elif not text and name:
                return name, json.loads(data)
    raise AssertionError("the stream ended before its first event")


async def test_mesh_up_serves_the_dashboard_and_its_abort_withdraws_the_fault(
    tmp_path: Path,
) -> None:
    state_file, out = tmp_path / "state.json", tmp_path / "mesh-up.out"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [*FAULTPLANE, "mesh", "up", "--mesh", str(MESH_FILE), "--state-file", str(state_file),
             "--run-dir", str(tmp_path / "run"), "--server-arg=--baseline-min-seconds=0"],
            stdout=stdout, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    state: dict = {}
    try:
        await wait_until(_exists(state_file), 90, "the state file")
        state = json.loads(state_file.read_text())
        web = state["web"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", web)
        await wait_until(lambda: _printed(out, f"dashboard: {web}"), 10, "the dashboard line")

        async with grpc.aio.insecure_channel(state["api"]) as channel:
            stub = fault_stub(channel)
            request = injection_request(duration_seconds=600, owner="local")
            created = await stub.CreateInjection(request, timeout=30)
            await wait_state(stub, created.id, {pb.ACTIVE})

        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(web) as reply:  # local mode: straight to Now
                text = await reply.text()
                assert reply.status == 200 and "local · admin" in text
            csrf = CSRF.search(text)
            assert csrf is not None
            name, snapshot = await first_event(session, f"{web}events")
            assert name == "snapshot"
            assert [i["id"] for i in snapshot["injections"]] == [created.id]
            async with session.post(
                f"{web}actions/abort",
                json={"id": created.id},
                headers={"X-CSRF-Token": csrf.group(1)},
            ) as reply:
                assert reply.status == 200
                aborted = (await reply.json())["injection"]
        assert aborted["state"] == "ABORTED"
        evidence = aborted["transitions"][-1]["evidence"]
        assert {e["sidecar"] for e in evidence if e["outcome"] == "acked"} == set(created.targets)

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()
        kill_all(state_pids(state) if state else [])


async def _printed(path: Path, line: str) -> bool:
    return line in path.read_text()
