"""The CLI speaks like a person (issue 12): exit codes a pipeline can branch on, `--json`
that prints only JSON, errors that name fields as the docs do and say what to type next,
`watch ID` that ends when the injection does, `watch` that rides out a restart.

Every command is a real `faultplane` process against a real `faultplane serve` process
(`--auth local` unless auth is the point) on free loopback ports with its own store; the
payments-api sidecars are fake ones (real ADS clients that ACK like Envoy) connected to
that server's xDS port. The demo test runs the real demo, real Envoys and all.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from faultplane.demo.ports import PortAllocator
from faultplane.server.control import MAX_API_MESSAGE_BYTES
from tests.cli_processes import (
    ABORT_ALL,
    Result,
    Serve,
    Server,
    cli,
    document,
    environment,
    example,
    failed,
    line_with,
    ok,
    serve,  # noqa: F401 (fixture)
    sidecars_of,  # noqa: F401 (fixture)
    spawn,
    spawned,  # noqa: F401 (fixture)
)
from tests.conftest import ROOT
from tests.helpers import EXAMPLE

SOUTH = ["payments-api-1", "payments-api-2", "payments-api-3"]
ROCKET = "\U0001f680"


async def inject(server: Server, path: str) -> dict[str, Any]:
    """`inject --no-wait --json -f PATH`: the injection, as the CLI prints it."""
    return dict(json.loads(ok(await server.cli("inject", "--no-wait", "--json", "-f", path))))


# --- documents: JSON as JSON, every unknown field, durations with units ----------------


async def test_every_unknown_field_is_listed_by_its_documented_name(tmp_path: Path) -> None:
    typo = example(bogus=1)
    typo["target"] = {**typo["target"], "maxpods": 3}
    typo["fault"] = {**typo["fault"], "ms": 200}
    typo["steady_state"] = {**typo["steady_state"], "abort_after_seconds": 60}
    path = document(tmp_path, "typo.json", json.dumps(typo))

    for command in ("inject", "plan"):  # refused before any connection: no --api needed
        message = failed(await cli(command, "-f", path), 2)

        for field in ("target.maxpods", "fault.ms", "steady_state.abort_after_seconds", "bogus"):
            assert f"{field}: unknown field" in message, message
        assert "did you mean max_pods?" in message and "did you mean abort_after?" in message
        assert "maxPods" not in message and "abortAfter" not in message  # no camelCase


async def test_a_json_file_is_parsed_as_json_surrogate_escaped_emoji_included(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)
    # As json.dumps writes it by default: the emoji as a UTF-16 surrogate pair escape.
    escaped = json.dumps(example(hypothesis=f"launch {ROCKET} must not page anyone"))
    assert "\\ud83d\\ude80" in escaped
    as_yaml = f"hypothesis: 'yaml {ROCKET}'\n" + "\n".join(
        f"{key}: {json.dumps(value)}" for key, value in EXAMPLE.items() if key != "hypothesis"
    )

    from_json = await inject(server, document(tmp_path, "e.json", escaped))
    ok(await server.cli("abort", from_json["id"]))  # the same scope may hold one at a time
    from_stdin = json.loads(ok(await server.cli("plan", "--json", "-f", "-", stdin=escaped)))
    yaml_stdin = json.loads(ok(await server.cli("plan", "--json", "-f", "-", stdin=as_yaml)))
    from_yaml = await inject(server, document(tmp_path, "e.yml", as_yaml))

    assert from_json["request"]["hypothesis"] == f"launch {ROCKET} must not page anyone"
    assert from_yaml["request"]["hypothesis"] == f"yaml {ROCKET}"
    assert from_stdin["matched"] == yaml_stdin["matched"] == SOUTH
    lone = escaped.replace("\\ude80", "")  # half a pair: not text
    message = failed(await cli("plan", "-f", document(tmp_path, "lone.json", lone)), 2)
    assert "hypothesis: not valid text" in message and "\\ud83d" in message


async def test_duration_seconds_takes_units_and_its_maximum_is_not_called_required(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)

    as_yaml = "duration_seconds: 5m\n" + "\n".join(
        f"{key}: {json.dumps(value)}" for key, value in EXAMPLE.items() if key != "duration_seconds"
    )
    too_long = document(tmp_path, "25h.json", json.dumps(example(duration_seconds="25h")))
    nonsense = document(tmp_path, "x.json", json.dumps(example(duration_seconds="2 weeks")))

    injected = await inject(server, document(tmp_path, "5m.yaml", as_yaml))
    refused = failed(await server.cli("plan", "-f", too_long), 1)
    unparsed = failed(await server.cli("plan", "-f", nonsense), 2)

    assert injected["request"]["duration_seconds"] == 300
    assert "INVALID_ARGUMENT" in refused and "duration_seconds: at most 86400" in refused
    assert "required" not in refused
    assert "duration_seconds: '2 weeks' is not a duration" in unparsed


async def test_an_oversized_request_names_the_field_that_is_too_large(
    serve: Serve,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    # The 3.9 MB hypothesis: over the API's message size, measured before sending.
    large = document(tmp_path, "large.json", json.dumps(example(hypothesis="h" * 3_900_000)))

    for command in ("inject", "plan"):
        message = failed(await server.cli(command, "-f", large), 2)

        assert "hypothesis is 3.7 MiB" in message, message
        assert f"over the {MAX_API_MESSAGE_BYTES / 2**20:.1f} MiB" in message, message


# --- the address and the credentials ----------------------------------------------------


class _Http(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    """A plain HTTP/1.1 server on a free loopback port: something that is not gRPC."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
async def other_grpc() -> AsyncIterator[str]:
    """A gRPC server without FaultService (health only): gRPC, but not faultplane."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=0)


async def test_an_api_address_that_is_not_faultplane_says_so_and_how_to_fix_it(
    http_server: str, other_grpc: str, tmp_path: Path
) -> None:
    nothing = f"127.0.0.1:{PortAllocator()()}"  # free: nothing listens there

    refused = failed(await cli("ls", "--api", nothing), 1)
    from_env = failed(await cli("sidecars", env={"FAULTPLANE_API": nothing}), 1)
    http = failed(await cli("get", "inj-x", "--api", http_server), 1)
    grpc_only = failed(await cli("ls", "--api", other_grpc), 1)
    watch = failed(await cli("watch", "--api", nothing), 1)  # the first connection: no retry

    assert f"{nothing} (from --api): nothing is listening there" in refused
    assert f"{nothing} (from $FAULTPLANE_API)" in from_env
    assert f"{http_server} (from --api)" in http and "not gRPC" in http
    assert f"{other_grpc} (from --api) is not the faultplane API" in grpc_only
    assert "faultplane.v1.FaultService" in grpc_only
    assert f"{nothing} (from --api): nothing is listening there" in watch
    for message in (refused, from_env, http, grpc_only, watch):
        assert "--api" in message and "$FAULTPLANE_API" in message, message


async def test_a_missing_token_names_the_flag_and_the_variable(
    serve: Serve,  # noqa: F811
) -> None:
    server = await serve("--auth", "token")  # the last --auth wins over the fixture's

    missing = failed(await server.cli("ls"), 1)
    wrong = failed(await server.cli("ls", "--token", "fp_bogus.not-a-token"), 1)
    wrong_env = failed(await server.cli("ls", env={"FAULTPLANE_TOKEN": "fp_bogus.x"}), 1)

    assert missing.startswith("faultplane: UNAUTHENTICATED: ")
    assert "no token given: pass --token or set $FAULTPLANE_TOKEN" in missing
    for message in (wrong, wrong_env):
        assert "the token from --token or $FAULTPLANE_TOKEN was refused" in message
        assert "no token given" not in message


# --- plan --------------------------------------------------------------------------------


async def test_plan_renders_each_distinct_change_once_and_says_the_pick_may_differ(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)
    capped = example(target={**EXAMPLE["target"], "selector": "", "max_pods": 2})

    south = ok(await server.cli("plan", "-f", document(tmp_path, "south.json",
                                                       json.dumps(EXAMPLE))))  # fmt: skip
    two_of_four = ok(await server.cli("plan", "-f", document(tmp_path, "two.json",
                                                             json.dumps(capped))))  # fmt: skip

    # Three sidecars, one change: one rendering, the three named together.
    assert "1 distinct change:" in south
    assert "\npayments-api-1, payments-api-2, payments-api-3: route config 'egress'" in south
    assert south.count("route config ") == 1 and south.count('"name": "egress"') == 1
    assert "may differ" not in south  # all matched are targeted: nothing to pick
    # max_pods 2 of 4 matched: the pick is the plan's own, and it says so.
    assert "note: max_pods 2 < 4 matched" in two_of_four
    assert "the sidecars it faults may differ" in two_of_four
    assert two_of_four.count("route config ") == 1


# --- watch -------------------------------------------------------------------------------


async def exited(process: asyncio.subprocess.Process, timeout: float = 60) -> Result:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def test_watch_id_exits_0_with_the_final_state_and_1_for_an_unknown_id(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    spawned: list[asyncio.subprocess.Process],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)
    short = document(tmp_path, "short.json", json.dumps(example(duration_seconds=2)))
    long = document(tmp_path, "long.json", json.dumps(example(**ABORT_ALL, duration_seconds=600)))

    completing = json.loads(ok(await server.cli("inject", "--json", "-f", short)))
    watching = await spawn(spawned, "watch", completing["id"], "--api", server.api)
    done = await exited(watching)
    again = await server.cli("watch", completing["id"])  # already ended: at once
    again_json = await server.cli("watch", completing["id"], "--json")

    assert done.returncode == 0, done.stderr
    assert f"{completing['id']} ended: COMPLETED" in done.stdout
    assert f"{completing['id']} ended: COMPLETED" in ok(again)
    (event,) = [json.loads(line) for line in ok(again_json).splitlines()]
    assert event["injection"]["state"] == "COMPLETED" and "transition" not in event

    aborting = json.loads(ok(await server.cli("inject", "--json", "-f", long)))
    watching = await spawn(spawned, "watch", aborting["id"], "--json", "--api", server.api)
    ok(await server.cli("abort", aborting["id"], "--reason", "enough"))
    aborted = await exited(watching)

    assert aborted.returncode == 0, aborted.stderr
    lines = [json.loads(line) for line in aborted.stdout.splitlines()]  # JSON only
    assert lines[-1]["injection"]["state"] == "ABORTED"

    unknown = failed(await server.cli("watch", "inj-does-not-exist"), 1)
    assert "NOT_FOUND" in unknown and "inj-does-not-exist" in unknown


async def subscribed(server: Server, stdout: asyncio.StreamReader, path: str) -> None:
    """Returns once a plain `watch` printing to `stdout` is subscribed: it printed an
    event. Until then, makes events (inject, abort) and looks, each round a few seconds."""
    deadline = time.monotonic() + 60
    while True:
        made = await inject(server, path)
        ok(await server.cli("abort", made["id"]))
        try:
            while True:
                line = (await asyncio.wait_for(stdout.readline(), 5)).decode()
                assert line, "the watch exited before it printed an event"
                if made["id"] in line:
                    return
        except TimeoutError:
            assert time.monotonic() < deadline, "the watch printed no event in 60 s"


async def test_watch_reconnects_after_a_server_restart_and_gives_up_after_its_limit(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    spawned: list[asyncio.subprocess.Process],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)
    inbound = document(tmp_path, "in.json", json.dumps(example(**ABORT_ALL, duration_seconds=600)))
    patient = await spawn(spawned, "watch", "--api", server.api)
    hasty = await spawn(spawned, "watch", "--reconnect-for", "1", "--api", server.api)
    assert patient.stdout and patient.stderr and hasty.stdout
    await subscribed(server, patient.stdout, inbound)
    await subscribed(server, hasty.stdout, inbound)  # nothing is left live: all aborted

    assert server.child is not None
    server.child.kill()  # SIGKILL: the watch streams end with UNAVAILABLE
    await asyncio.to_thread(server.child.stop)
    await line_with(patient.stderr, "control server unavailable, reconnecting…")
    gave_up = await exited(hasty, timeout=30)
    server.start()  # the same ports, the same store
    await server.healthy()
    await line_with(patient.stderr, "reconnected")
    await sidecars_of(server)  # the fake sidecars do not reconnect by themselves
    second = await inject(server, inbound)

    assert "-> PENDING" in await line_with(patient.stdout, second["id"])
    assert gave_up.returncode == 1
    assert "control server unavailable, reconnecting…" in gave_up.stderr
    assert "gave up" in gave_up.stderr and "--reconnect-for 1" in gave_up.stderr
    assert patient.returncode is None  # still watching


# --- --json and exit codes -----------------------------------------------------------------


async def test_json_flags_print_only_json_and_exit_codes_are_0_1_2(
    serve: Serve,  # noqa: F811
    sidecars_of: Callable[[Server], Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = await serve()
    await sidecars_of(server)
    inbound = document(tmp_path, "in.json", json.dumps(example(**ABORT_ALL, duration_seconds=600)))

    plan = ok(await server.cli("plan", "--json", "-f", inbound))
    injected = ok(await server.cli("inject", "--json", "-f", inbound))
    injection_id = json.loads(injected)["id"]
    outputs = [
        plan,
        injected,
        ok(await server.cli("get", injection_id, "--json")),
        ok(await server.cli("ls", "--json")),
        ok(await server.cli("sidecars", "--json")),
        ok(await server.cli("baseline", "merchant-write-success", "--json")),
        ok(await server.cli("abort", injection_id, "--json")),
        ok(await server.cli("abort", "--all", "--json")),
        ok(await server.cli("audit", "--json")),
        ok(await server.cli("audit", "verify", "--json")),
        ok(await cli("token", "list", "--json", "--db", str(server.db))),
    ]
    for output in outputs:
        json.loads(output)  # the whole of stdout is one JSON document

    # 2: a usage error, refused before anything is sent; 1: a refused call.
    failed(await server.cli("ls", "--state", "SIDEWAYS"), 2)
    failed(await server.cli("abort"), 2)
    failed(await server.cli("inject", "-f", str(tmp_path / "missing.json")), 2)
    failed(await server.cli("plan", "-f", document(tmp_path, "bad.json", "{not json")), 2)
    failed(await server.cli("get", "inj-nope"), 1)
    failed(await server.cli("abort", injection_id), 1)  # already ended: refused


@pytest.mark.timeout(300)
def test_demo_json_prints_one_json_document_on_stdout() -> None:
    """`faultplane demo --json | jq .`: the narration goes to stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "faultplane", "demo", "--duration", "5", "--json"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, env=environment(None),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["sidecars"] == 7
    assert [i["state"] for i in summary["injections"]] == ["COMPLETED", "ABORTED"]
    assert "bringing the mesh up" in result.stderr and "PHASE" in result.stderr
