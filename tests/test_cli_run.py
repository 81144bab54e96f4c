"""`faultplane run -f EXPERIMENT`, as a pipeline runs it: real `faultplane run` processes
against one real demo mesh (control server, 7 Envoys, apps, load) shared by the module.

Every experiment here is one of `examples/experiments/`, with its duration shortened (or
lengthened, for those ended by people), the held ones' `min` lowered (see `steady`) and
the second refuted one's no higher than the baseline the first left behind. Tests run
one experiment at a time: the faults share payments-api's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from google.protobuf import json_format

from faultplane.cli import reports
from faultplane.cli.run import progress_bar, verdict_exit_code
from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.lifecycle.lifecycle import HELD, OPERATOR_ABORT, REFUTED
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import fault_runtime_keys, run_cli

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXPERIMENTS = ROOT / "examples" / "experiments"
HELD_FILE = EXPERIMENTS / "held-latency-fraud-scoring.yaml"
REFUTED_FILE = EXPERIMENTS / "refuted-abort-payments.yaml"
BURSTY_HELD_FILE = EXPERIMENTS / "held-bursty-fraud-ledger.yaml"
BURSTY_REFUTED_FILE = EXPERIMENTS / "refuted-bursty-fraud-ledger.yaml"
# A run's own bound: activation, its duration, withdrawal, an interpreter start on a
# loaded 2-core machine.
RUN_TIMEOUT = 90.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--baseline-min-seconds", "0", "--guard-tick", "0.5")
    async with MeshRun(MESH_FILE, tmp_path_factory.mktemp("mesh"), server_args=args) as run:
        yield run


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


def steady(minimum: float, source: Path = HELD_FILE) -> dict[str, Any]:
    """A held example's steady state with another `min`: a run after the refuted one
    starts with a minute of merchant writes that include its 503s (~0.9)."""
    document = yaml.safe_load(source.read_text())
    return {**document["steady_state"], "min": minimum}


def experiment(tmp: Path, source: Path, **changes: Any) -> Path:
    """An example experiment with top-level fields changed, written beside the reports."""
    document = {**yaml.safe_load(source.read_text()), **changes}
    path = tmp / source.name
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    junit: Path
    report: Path
    markdown: Path


def report_args(tmp: Path) -> tuple[list[str], Path, Path, Path]:
    junit, report, markdown = tmp / "junit.xml", tmp / "report.json", tmp / "report.md"
    flags = ["--junit", str(junit), "--report", str(report), "--markdown", str(markdown)]
    return flags, junit, report, markdown


@contextlib.asynccontextmanager
async def run_process(api: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A `faultplane run` process; killed by PID if the test leaves it running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faultplane", "run", "--api", api, *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_to_end(api: str, tmp: Path, document: Path) -> Run:
    flags, junit, report, markdown = report_args(tmp)
    async with run_process(api, "-f", str(document), *flags) as process:
        code, out, err = await finished(process)
    return Run(code, out, err, junit, report, markdown)


async def active_injection(stub: faultplane_pb2_grpc.FaultServiceStub) -> pb.Injection:
    """The one ACTIVE injection (these tests run one at a time), once there is one."""
    found: list[pb.Injection] = []

    async def active() -> bool:
        reply = await stub.ListInjections(pb.ListInjectionsRequest(states=[pb.ACTIVE]), timeout=5)
        found[:] = list(reply.injections)
        return bool(found)

    await wait_until(active, RUN_TIMEOUT, "an ACTIVE injection")
    assert len(found) == 1, [i.id for i in found]
    return found[0]


def only_testcase(junit: Path) -> ET.Element:
    root = ET.parse(junit).getroot()  # raises on XML that is not well formed
    cases = root.findall("./testsuite/testcase")
    assert root.tag == "testsuites" and len(cases) == 1
    return cases[0]


# -- held and refuted: one run each, shared by the tests that read its reports ------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def held(mesh_run: MeshRun, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("held")
    return await run_to_end(
        mesh_run.api_address,
        tmp,
        experiment(tmp, HELD_FILE, duration_seconds=5, steady_state=steady(0.5)),
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def refuted(mesh_run: MeshRun, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("refuted")
    return await run_to_end(mesh_run.api_address, tmp, experiment(tmp, REFUTED_FILE))


async def test_held_hypothesis_exits_0_with_a_passing_testcase(held: Run) -> None:
    assert held.code == 0, held.out + held.err
    assert f"COMPLETED: {HELD} (exit 0)" in held.out
    assert "PENDING -> ACTIVE" in held.out and "ACTIVE -> COMPLETED" in held.out
    assert "merchant-write-success" in held.out  # a line per guard reading
    case = only_testcase(held.junit)
    assert case.find("failure") is None and case.find("error") is None
    assert "s left" not in held.out  # no progress bar into a pipe


async def test_progress_bar_on_a_terminal(mesh_run: MeshRun, tmp_path: Path) -> None:
    document = experiment(tmp_path, HELD_FILE, duration_seconds=3, steady_state=steady(0.5))
    leader, follower = os.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "faultplane", "run", "--api", mesh_run.api_address,
            "-f", str(document), cwd=ROOT, stdout=follower, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        try:
            screen = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, read_all, leader), RUN_TIMEOUT
            )
        finally:
            # The terminal closes as the run exits, before its exit status is reaped:
            # give it that moment, and kill it only if it really hangs.
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0, screen
    assert re.search(r"\[#*\.*\]  \d+s / 3s, \d+s left", screen), screen
    assert "\r\x1b[K" in screen  # the bar is redrawn in place, under the event lines


def read_all(fd: int) -> str:
    """Everything written to a pseudo-terminal until its last writer closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def test_refuted_hypothesis_exits_1_with_the_abort_reason_as_junit_failure(
    refuted: Run, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    assert refuted.code == 1, refuted.out + refuted.err
    report = json.loads(refuted.report.read_text())
    injection = await stub.GetInjection(pb.GetInjectionRequest(id=report["injection"]["id"]))
    assert injection.state == pb.ABORTED and injection.verdict == REFUTED
    assert "BREACH" in refuted.out
    failure = only_testcase(refuted.junit).find("failure")
    assert failure is not None and failure.get("message") == injection.reason
    root = ET.parse(refuted.junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("1", "1", "0")


async def test_json_report_holds_transitions_with_evidence_and_readings(refuted: Run) -> None:
    report = json.loads(refuted.report.read_text())
    assert report["exit_code"] == 1 and report["verdict"] == REFUTED
    transitions = report["injection"]["transitions"]
    assert [t["to_state"] for t in transitions][-2:] == ["ACTIVE", "ABORTED"]
    assert any(t.get("evidence") for t in transitions)
    readings = report["injection"]["readings"]
    assert readings and any(r.get("breach") for r in readings)
    assert all("value" in r or r.get("error") for r in readings)


async def test_markdown_names_the_verdict_and_links_an_existing_chart(refuted: Run) -> None:
    text = refuted.markdown.read_text()
    assert f"**Verdict: {REFUTED}** (exit 1)" in text
    assert "min 0.99" in text and "ACTIVE -> ABORTED" in text
    chart = refuted.markdown.parent / "report.png"
    assert f"]({chart.name})" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_markdown_without_matplotlib_says_what_to_install(
    refuted: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = json.loads(refuted.report.read_text())
    injection = json_format.ParseDict(history["injection"], pb.Injection())
    outcome = reports.Outcome(
        history["experiment"], history["exit_code"], history["verdict"], history["reason"],
        history["started_at"], history["finished_at"], injection.request, injection,
        tuple(injection.readings),
    )  # fmt: skip
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    note = reports.write_markdown(tmp_path / "report.md", outcome)
    assert note is not None and "pip install 'faultplane[report]'" in note
    text = (tmp_path / "report.md").read_text()
    assert REFUTED in text and "pip install 'faultplane[report]'" in text
    assert not (tmp_path / "report.png").exists()


# -- a correlated, bursty experiment: a constant part and a bursting one -------------------


def switches(report: Path) -> list[dict[str, Any]]:
    """The pattern's switches in a JSON report: its ACTIVE -> ACTIVE transitions."""
    transitions = json.loads(report.read_text())["injection"]["transitions"]
    return [t for t in transitions if t.get("from_state") == t["to_state"] == "ACTIVE"]


async def test_bursty_correlated_experiment_holds_with_its_switches_in_the_report(
    mesh_run: MeshRun, tmp_path: Path
) -> None:
    # 9 s of the example: its ledger part bursts 2 s on / 3 s off, so it switches off at
    # 2 s, on at 5 s and off at 7 s (2 s before the deadline, for a slow ACK), while the
    # fraud-scoring delay stays on throughout.
    document = experiment(
        tmp_path, BURSTY_HELD_FILE, duration_seconds=9, steady_state=steady(0.5, BURSTY_HELD_FILE)
    )
    run = await run_to_end(mesh_run.api_address, tmp_path, document)
    assert run.code == 0, run.out + run.err
    assert f"COMPLETED: {HELD} (exit 0)" in run.out
    shown = switches(run.report)
    assert [t["reason"].split(" (")[0] for t in shown] == [
        "faults[1] burst: off", "faults[1] burst: on at 50%", "faults[1] burst: off",
    ]  # fmt: skip
    # Each switch moved only the bursty part's runtime keys, on its one sidecar.
    for change in shown:
        assert [(e["type"], e["outcome"]) for e in change["evidence"]] == [("rtds", "acked")]
    assert "faults[1] burst: on at 50%" in run.out  # followed live, a line per switch
    report = json.loads(run.report.read_text())
    assert len(report["injection"]["request"]["faults"]) == 2


async def test_bursty_correlated_experiment_is_refuted_by_its_first_burst(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub, tmp_path: Path
) -> None:
    # The module's other refuted run left its breach in the baseline; the guard's `min`
    # may be no higher than the baseline's p5 (the pre-flight), and a 10 s burst of 503s
    # on every pod's ledger calls still breaks it.
    baseline = await stub.GetBaseline(pb.GetBaselineRequest(slo="merchant-write-success"))
    document = yaml.safe_load(BURSTY_REFUTED_FILE.read_text())
    minimum = min(document["steady_state"]["min"], baseline.p5)
    path = experiment(
        tmp_path, BURSTY_REFUTED_FILE, steady_state={**document["steady_state"], "min": minimum}
    )
    run = await run_to_end(mesh_run.api_address, tmp_path, path)
    assert run.code == 1, run.out + run.err
    report = json.loads(run.report.read_text())
    assert report["verdict"] == REFUTED
    states = [t["to_state"] for t in report["injection"]["transitions"]]
    assert states[-1] == "ABORTED" and "ACTIVE" in states
    # The guard's end withdrew both parts from every payments-api sidecar.
    for pod in ("payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"):
        found = mesh_run.mesh.pod(pod)
        assert found is not None
        assert await fault_runtime_keys(f"127.0.0.1:{found.ports.admin}") == [], pod


# -- ended by people -----------------------------------------------------------------------


async def test_operator_abort_from_another_process_exits_2(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub, tmp_path: Path
) -> None:
    flags, junit, _, _ = report_args(tmp_path)
    document = experiment(tmp_path, HELD_FILE, duration_seconds=120, steady_state=steady(0.0))
    async with run_process(mesh_run.api_address, "-f", str(document), *flags) as process:
        injection = await active_injection(stub)
        code, out, err = await run_cli("abort", injection.id, "--api", mesh_run.api_address)
        assert code == 0, err
        code, out, err = await finished(process)
    assert code == 2, out + err
    assert f"ABORTED: {OPERATOR_ABORT} (exit 2)" in out
    error = only_testcase(junit).find("error")
    assert error is not None and error.get("type") == OPERATOR_ABORT


async def test_ctrl_c_aborts_the_experiment_and_says_so(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub, tmp_path: Path
) -> None:
    document = experiment(tmp_path, HELD_FILE, duration_seconds=120, steady_state=steady(0.0))
    async with run_process(mesh_run.api_address, "-f", str(document)) as process:
        injection = await active_injection(stub)
        process.send_signal(signal.SIGINT)
        code, out, err = await finished(process)
    assert code == 2, out + err
    assert f"interrupted: aborting {injection.id}" in out
    ended = await stub.GetInjection(pb.GetInjectionRequest(id=injection.id))
    assert ended.state == pb.ABORTED and "interrupted: faultplane run" in ended.reason


async def test_ctrl_c_with_detach_leaves_the_experiment_running(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub, tmp_path: Path
) -> None:
    document = experiment(tmp_path, HELD_FILE, duration_seconds=120, steady_state=steady(0.0))
    async with run_process(mesh_run.api_address, "-f", str(document), "--detach") as process:
        injection = await active_injection(stub)
        process.send_signal(signal.SIGINT)
        code, out, err = await finished(process)
    try:
        assert code == 130, out + err
        assert f"stopped following {injection.id}" in out
        still = await stub.GetInjection(pb.GetInjectionRequest(id=injection.id))
        assert still.state == pb.ACTIVE
    finally:
        await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id, reason="cleanup"))


# -- refused at submission -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"target": {"service": "payments-api", "maxpods": 1}}, "target.maxpods"),  # by the CLI
        ({"fault": {"type": "abort", "http_status": 503, "percentage": 150}}, "percentage"),
    ],
    ids=["unknown-field", "invalid-argument"],
)
async def test_refused_document_exits_3_naming_the_field(
    mesh_run: MeshRun, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    document = experiment(tmp_path, REFUTED_FILE, **change)
    flags, junit, report, _ = report_args(tmp_path)
    code, out, err = await run_cli(
        "run", "--api", mesh_run.api_address, "-f", str(document), *flags
    )
    assert code == 3, out + err
    assert named in err
    error = only_testcase(junit).find("error")
    assert error is not None and named in (error.get("message") or "")
    assert json.loads(report.read_text())["injection"] is None  # nothing was started


# -- the CI examples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
async def test_ci_example_gates_on_an_example_experiment_with_junit(name: str) -> None:
    text = (ROOT / "examples" / "ci" / name).read_text()
    yaml.safe_load(text)  # valid YAML
    gate = re.search(r"faultplane run -f (\S+)\s+--junit (\S+)", text)
    assert gate is not None, "no `faultplane run -f ... --junit ...` step"
    assert (ROOT / gate.group(1)).is_file()
    assert "faultplane mesh up --state-file" in text and "wait-for-baseline" in text


async def test_wait_for_baseline_returns_once_the_server_has_its_history(
    mesh_run: MeshRun,
) -> None:
    env = {
        **os.environ,
        "FAULTPLANE_API": mesh_run.api_address,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "examples" / "ci" / "wait-for-baseline"), "merchant-write-success", "0",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    code, out, err = await finished(process)
    assert code == 0, out + err  # this server requires no history (--baseline-min-seconds 0)
    assert "baseline of merchant-write-success" in err


# -- pure parts ----------------------------------------------------------------------------


async def test_exit_code_is_the_servers_verdict_word_for_word() -> None:
    assert verdict_exit_code(HELD) == 0
    assert verdict_exit_code(REFUTED) == 1
    assert verdict_exit_code(OPERATOR_ABORT) == 2
    assert verdict_exit_code("inconclusive: the steady state was never read") == 2
    assert verdict_exit_code("") == 2


async def test_progress_bar_fills_towards_the_deadline() -> None:
    assert progress_bar(100.0, 130.0, 115.0, width=10) == "[#####.....]  15s / 30s, 15s left"
    assert progress_bar(100.0, 130.0, 200.0, width=10).startswith("[##########]")
