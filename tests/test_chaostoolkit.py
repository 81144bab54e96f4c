"""The Chaos Toolkit extension, driven by the real `chaos run` against a real mesh.

One mesh (7 Envoys, apps, load, the control server with its guard) serves the module;
each experiment runs as its own `chaos` process, the mesh's API address passed with
`--var faultplane_api=...` (while $FAULTPLANE_API points nowhere, so the --var is what
reaches the mesh). The argument-handling tests need no mesh.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from chaoslib.exceptions import ActivityFailed

from faultplane.chaostoolkit import actions, probes, registry
from faultplane.chaostoolkit.connection import connection_from
from faultplane.cli.connection import DEFAULT_API
from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT

EXAMPLES = ROOT / "examples" / "chaostoolkit"
CHAOS = str(Path(sys.executable).parent / "chaos")
NOWHERE = "127.0.0.1:9"  # discard port: nothing answers gRPC there
RUN_TIMEOUT = 120.0  # an experiment: interpreter start-up, a few seconds of fault, rollback


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test is its own Chaos Toolkit run: nothing started by an earlier one."""
    registry.clear()
    yield
    registry.clear()


# Argument handling, no mesh needed.


def test_malformed_address_is_refused_naming_the_configuration_key() -> None:
    with pytest.raises(ActivityFailed) as refused:
        probes.injection_state("inj-1", configuration={"faultplane_api": "not an address"})

    assert "faultplane_api: 'not an address'" in str(refused.value)
    assert "configuration faultplane_api" in str(refused.value)


def test_unreachable_address_names_it_and_the_key_that_sets_it() -> None:
    address = f"127.0.0.1:{PortAllocator()()}"  # free: nothing listens

    with pytest.raises(ActivityFailed) as failed:
        actions.abort_all(configuration={"faultplane_api": address})

    message = str(failed.value)
    assert message.startswith("UNAVAILABLE: cannot reach the faultplane API at " + address)
    assert "set faultplane_api" in message


def test_address_and_token_default_like_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULTPLANE_API", raising=False)
    monkeypatch.delenv("FAULTPLANE_TOKEN", raising=False)
    assert connection_from(None, None).address == DEFAULT_API
    monkeypatch.setenv("FAULTPLANE_API", "10.0.0.1:7000")
    monkeypatch.setenv("FAULTPLANE_TOKEN", "from-env")
    from_env = connection_from({}, {})
    assert (from_env.address, from_env.source, from_env.token) == (
        "10.0.0.1:7000", "$FAULTPLANE_API", "from-env",
    )  # fmt: skip
    # An activity gets its declared secrets flat; a control gets them by scope.
    configured = connection_from(
        {"faultplane_api": "10.0.0.2:7001"}, {"faultplane": {"faultplane_token": "scoped"}}
    )
    assert (configured.address, configured.token) == ("10.0.0.2:7001", "scoped")
    assert connection_from(None, {"faultplane_token": "flat"}).token == "flat"


def test_bad_document_is_refused_with_every_field_named_before_any_call() -> None:
    document = _held_document()
    document["target"]["maxpods"] = document["target"].pop("max_pods")
    document["duration_seconds"] = "soon"

    with pytest.raises(ActivityFailed) as refused:
        actions.inject(document=document, configuration={"faultplane_api": NOWHERE})

    message = str(refused.value)
    assert "target.maxpods: unknown field (did you mean max_pods?" in message
    assert "duration_seconds: 'soon' is not a duration" in message
    assert not registry.started()


def test_inject_needs_exactly_one_of_document_and_file() -> None:
    with pytest.raises(ActivityFailed, match="document, file: give exactly one"):
        actions.inject(document=_held_document(), file="x.json")
    with pytest.raises(ActivityFailed, match="document, file: give exactly one"):
        actions.inject()


def test_missing_document_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    with pytest.raises(ActivityFailed, match=f"{missing}: No such file or directory"):
        actions.inject(file=str(missing), configuration={"faultplane_api": NOWHERE})


def test_probes_without_an_id_before_any_inject_say_what_to_do() -> None:
    with pytest.raises(ActivityFailed, match="injection_id: not given, and this run has"):
        probes.verdict()
    # The steady-state probe before the method: nothing injected, nothing refuted.
    assert probes.hypothesis_holds() is True


# `chaos run` against a real mesh.


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--baseline-min-seconds", "0", "--guard-tick", "0.5")
    async with MeshRun(MESH_FILE, tmp_path_factory.mktemp("mesh"), server_args=args) as run:
        yield run


class ChaosRun:
    """One `chaos run EXPERIMENT` process, its log, journal and settings in `where`."""

    def __init__(self, experiment: Path, api: str, where: Path) -> None:
        self.journal_path = where / "journal.json"
        settings = where / "settings.yaml"
        settings.write_text("{}\n")
        argv = [
            CHAOS, "--no-version-check", "--log-file", str(where / "chaostoolkit.log"),
            "--settings", str(settings),
            "run", "--journal-path", str(self.journal_path),
            "--var", f"faultplane_api={api}", str(experiment),
        ]  # fmt: skip
        self.child = Child("chaos", argv, where / "chaos.out").start(
            env={"FAULTPLANE_API": NOWHERE}
        )

    async def exit_code(self) -> int:
        await wait_until(self._exited, RUN_TIMEOUT, "chaos run to exit", interval=0.1)
        code = self.child.process.wait() if self.child.process else None
        assert code is not None
        return code

    async def _exited(self) -> bool:
        return not self.child.alive()

    def journal(self) -> dict[str, Any]:
        return dict(json.loads(self.journal_path.read_text()))

    def output(self) -> str:
        return self.child.log_tail(200)


StartChaos = Callable[[Path], ChaosRun]


@pytest_asyncio.fixture(loop_scope="module")
async def chaos(mesh_run: MeshRun, tmp_path: Path) -> AsyncIterator[StartChaos]:
    """Starts `chaos run` processes; each is stopped by PID afterwards, whatever happened."""
    runs: list[ChaosRun] = []

    def start(experiment: Path) -> ChaosRun:
        runs.append(ChaosRun(experiment, mesh_run.api_address, tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        run.child.stop()


async def get_injection(mesh_run: MeshRun, injection_id: str) -> pb.Injection:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        return await stub.GetInjection(pb.GetInjectionRequest(id=injection_id), timeout=10)


async def list_injections(mesh_run: MeshRun) -> list[pb.Injection]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        reply = await stub.ListInjections(pb.ListInjectionsRequest(page_size=200), timeout=10)
        return list(reply.injections)


def outputs(journal: dict[str, Any]) -> dict[str, Any]:
    """Each method activity's output, by activity name."""
    return {run["activity"]["name"]: run.get("output") for run in journal["run"]}


@pytest.mark.asyncio(loop_scope="module")
async def test_held_experiment_completes_and_chaos_exits_0(
    mesh_run: MeshRun, chaos: StartChaos
) -> None:
    run = chaos(EXAMPLES / "held.json")

    assert await run.exit_code() == 0, run.output()
    journal = run.journal()
    assert journal["status"] == "completed" and journal["deviated"] is False
    method = outputs(journal)
    injected = method["inject-fraud-scoring-latency"]
    assert injected["state"] == "ACTIVE" and len(injected["targets"]) == 3
    assert method["wait-until-ended"]["state"] == "COMPLETED"
    assert method["verdict"] == "hypothesis held"
    assert 0.95 <= method["last-slo-reading"] <= 1.0
    after = journal["steady_states"]["after"]
    assert after["steady_state_met"] is True
    assert journal["rollbacks"][0]["output"] == []  # nothing was left live to abort
    done = await get_injection(mesh_run, injected["id"])
    assert done.state == pb.COMPLETED and done.verdict == "hypothesis held"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)  # start-up, then the interrupted run's end
@pytest.mark.parametrize("interruption", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
async def test_interrupted_run_still_aborts_its_injection(
    mesh_run: MeshRun, chaos: StartChaos, tmp_path: Path, interruption: signal.Signals
) -> None:
    # The held experiment, made long enough that only the interruption can end it.
    experiment = json.loads((EXAMPLES / "held.json").read_text())
    experiment["method"][0]["provider"]["arguments"]["document"]["duration_seconds"] = "10m"
    long_held = tmp_path / "long-held.json"
    long_held.write_text(json.dumps(experiment))
    before = {injection.id for injection in await list_injections(mesh_run)}
    run = chaos(long_held)
    started: list[pb.Injection] = []

    async def active() -> bool:
        started[:] = [i for i in await list_injections(mesh_run) if i.id not in before]
        return bool(started) and started[0].state == pb.ACTIVE

    await wait_until(active, RUN_TIMEOUT, "the experiment's injection to be ACTIVE", [run.child])
    run.child.kill(interruption)  # while the method waits for the injection's end

    await run.exit_code()
    journal = run.journal()
    assert journal["status"] == "interrupted", run.output()
    assert "rollbacks" not in journal or journal["rollbacks"] == []  # Chaos skipped them
    ended = await get_injection(mesh_run, started[0].id)
    assert ended.state == pb.ABORTED, (pb.State.Name(ended.state), ended.reason)
    assert "Chaos Toolkit run ended (interrupted)" in ended.reason


@pytest.mark.asyncio(loop_scope="module")
async def test_refuted_experiment_deviates_and_chaos_exits_1(
    mesh_run: MeshRun, chaos: StartChaos
) -> None:
    run = chaos(EXAMPLES / "refuted.json")

    assert await run.exit_code() == 1, run.output()  # chaos: 1 when failed or deviated
    journal = run.journal()
    assert journal["deviated"] is True and journal["status"] == "completed"
    assert "Experiment ended with status: deviated" in run.output()
    method = outputs(journal)
    assert method["wait-until-ended"]["state"] == "ABORTED"
    assert method["verdict"] == "hypothesis refuted"
    assert method["last-slo-reading"] < 0.99
    injection_id = method["inject-payments-api-503"]["id"]
    done = await get_injection(mesh_run, injection_id)
    assert done.reason.startswith("steady-state breach: merchant-write-success")


@pytest.mark.asyncio(loop_scope="module")
async def test_refused_injection_fails_the_activity_with_the_apis_message(
    mesh_run: MeshRun,
) -> None:
    document = _held_document()
    document["fault"] = {"type": "abort", "http_status": 503, "percentage": 150}
    configuration = {"faultplane_api": mesh_run.api_address}

    with pytest.raises(ActivityFailed) as refused:
        await asyncio.to_thread(actions.inject, document=document, configuration=configuration)

    assert str(refused.value).startswith("INVALID_ARGUMENT: ")
    assert "fault.percentage" in str(refused.value), str(refused.value)
    assert not registry.started()


def _held_document() -> dict[str, Any]:
    experiment = json.loads((EXAMPLES / "held.json").read_text())
    return dict(experiment["method"][0]["provider"]["arguments"]["document"])
