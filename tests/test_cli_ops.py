"""The operator CLI against a control-server process serving the real demo mesh."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.render.faults import INJECTION_HEADER
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import EXAMPLE, percentile, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLE_FILE = ROOT / "examples" / "latency-fraud-scoring.json"
SOUTH = {"payments-api-1", "payments-api-2", "payments-api-3"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--baseline-min-seconds", "0")
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), load=False, server_args=args
    ) as mesh_run:
        yield mesh_run


def cli(run: MeshRun, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "faultplane", *args, "--api", run.api_address],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


async def test_example_file_is_the_issue_document() -> None:
    assert json.loads(EXAMPLE_FILE.read_text()) == EXAMPLE


async def test_example_puts_latency_on_three_south_sidecars_for_fraud_scoring_only(
    run: MeshRun, tmp_path: Path
) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(json.dumps({**EXAMPLE, "duration_seconds": 3}))
    watch = subprocess.Popen(
        [sys.executable, "-m", "faultplane", "watch", "--api", run.api_address],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip

    injection = json.loads(cli(run, "inject", "-f", str(short), "--json").stdout)

    assert injection["state"] == "ACTIVE"
    assert set(injection["targets"]) == SOUTH
    for pod in run.mesh.services["payments-api"].pods:
        egress = f"http://127.0.0.1:{pod.ports.egress}/score"
        fraud = await send(egress, 30, host="fraud-scoring")
        ledger = await send(egress, 10, host="ledger")
        assert max(r.ms for r in ledger) < 100, pod.name
        if pod.name in SOUTH:
            assert percentile([r.ms for r in fraud], 0.5) >= 200, pod.name
            assert all(r.headers[INJECTION_HEADER] == injection["id"] for r in fraud)
        else:
            assert percentile([r.ms for r in fraud], 0.5) < 100, pod.name

    try:
        for line in watch.stdout:
            if injection["id"] in line and "-> COMPLETED" in line:
                break
    finally:
        watch.kill()
        watch.wait()
    done = json.loads(cli(run, "get", injection["id"], "--json").stdout)
    assert done["state"] == "COMPLETED"
    for pod in run.mesh.services["payments-api"].pods:
        (reply,) = await send(f"http://127.0.0.1:{pod.ports.egress}/score", host="fraud-scoring")
        assert reply.ms < 100 and INJECTION_HEADER not in reply.headers


async def test_example_file_works_as_is_for_plan_inject_ls_and_abort(run: MeshRun) -> None:
    plan = cli(run, "plan", "-f", str(EXAMPLE_FILE)).stdout
    assert "matched: payments-api-1, payments-api-2, payments-api-3" in plan
    assert "faultplane.fault.1" in plan

    injection = json.loads(cli(run, "inject", "-f", str(EXAMPLE_FILE), "--json").stdout)
    listed = json.loads(cli(run, "ls", "--state", "ACTIVE", "--json").stdout)
    table = cli(run, "ls").stdout
    aborted = json.loads(cli(run, "abort", injection["id"], "--reason", "done", "--json").stdout)

    assert [i["id"] for i in listed] == [injection["id"]]
    assert injection["id"] in table and "latency p50 200ms p99 500ms -> fraud-scoring" in table
    assert aborted[0]["state"] == "ABORTED"
    assert aborted[0]["reason"].startswith("aborted by operator")  # who stopped whose fault
    assert aborted[0]["reason"].endswith(": done")


async def test_abort_all_from_the_cli(run: MeshRun) -> None:
    injection = json.loads(cli(run, "inject", "-f", str(EXAMPLE_FILE), "--json").stdout)

    output = cli(run, "abort", "--all").stdout

    assert injection["id"] in output and "ABORTED" in output
    assert "nothing live to abort" in cli(run, "abort", "--all").stdout


async def test_bad_files_and_bad_requests_are_reported_by_field(
    run: MeshRun, tmp_path: Path
) -> None:
    unknown_field = tmp_path / "typo.yaml"
    unknown_field.write_text(json.dumps({**EXAMPLE, "target": {**EXAMPLE["target"], "maxpods": 3}}))
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(json.dumps({**EXAMPLE, "fault": {"type": "latency", "p50_ms": -5}}))

    typo = cli(run, "inject", "-f", str(unknown_field), check=False)
    refused = cli(run, "inject", "-f", str(invalid), check=False)
    no_target = cli(run, "abort", check=False)

    assert typo.returncode == 2 and "maxpods" in typo.stderr
    assert refused.returncode != 0
    assert "INVALID_ARGUMENT" in refused.stderr and "fault.p50_ms" in refused.stderr
    assert no_target.returncode == 2 and "--all" in no_target.stderr
