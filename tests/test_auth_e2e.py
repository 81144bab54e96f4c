"""Token and TLS authentication end to end, through real processes (issue 9).

`faultplane serve --auth token` runs as a child process on free loopback ports with its
own store; tokens come from `faultplane token create` on that store file; every operator
call is a `faultplane ...` CLI process with `--token`, `$FAULTPLANE_TOKEN`, and
`--ca/--cert/--key`. What the other suites show in-process (test_governance), this
shows for the commands an operator actually types: no token is UNAUTHENTICATED, a
viewer may list but not freeze, an admin may, a revoked token stops working, and over
mutual TLS the certificate subject is the principal. Certificates: test_auth's `pki`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultplane.auth.tls import channel_credentials
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child
from tests.conftest import MESH_FILE, ROOT
from tests.test_auth import Pki, pki  # noqa: F401 (the certificate fixture)

# Generous for a loaded 2-core machine: start-up is an interpreter, grpc, the store.
START_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0
ALICE = "CN=alice,O=sre"  # the subject of pki.alice_cert, as gRPC reports it


@dataclass
class Served:
    """A running `faultplane serve` and how to reach it."""

    child: Child
    api: str
    db: Path
    tls: tuple[str, ...] = ()  # the CLI's --ca/--cert/--key for this server, if any
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token

    def cli(
        self, *args: str, token: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """One `faultplane ARGS --api ...` process; never inherits a FAULTPLANE_TOKEN."""
        argv = [*args, "--api", self.api, *self.tls, *(("--token", token) if token else ())]
        return run_cli(*argv, env=env)

    def token(self, principal: str, role: str) -> str:
        return create_token(self.db, principal, role)


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FAULTPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "faultplane", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=ROOT,
        env={**environment, **(env or {})},
    )


def create_token(db: Path, principal: str, role: str) -> str:
    result = run_cli("token", "create", "--db", str(db), "--principal", principal, "--role", role)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: str) -> str:
    """The CLI failed with gRPC status `code` (exit 1, `faultplane: CODE: details`)."""
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert f"faultplane: {code}: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


Serve = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Starts `faultplane serve` processes; each is stopped by PID afterwards, even when
    the test fails (SIGTERM, then SIGKILL)."""
    started: list[Child] = []

    def start(
        *flags: str,
        tls: tuple[str, ...] = (),
        probe: grpc.ChannelCredentials | None = None,
        tokens: Mapping[str, tuple[str, str]] = {},  # read only
    ) -> Served:
        """`tokens`: name -> (principal, role), created on the store before the start,
        the way an operator bootstraps the first admin."""
        ports = PortAllocator()
        api = f"127.0.0.1:{ports()}"
        db = tmp_path / f"server-{len(started)}" / "faultplane.db"
        db.parent.mkdir()
        created = {name: create_token(db, *who) for name, who in tokens.items()}
        child = Child(
            "faultplane-serve",
            [sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
             "--auth", "token", "--db", str(db), "--api-port", api.rsplit(":", 1)[1],
             "--xds-port", str(ports()), "--metrics-port", str(ports()), *flags],
            db.parent / "serve.log",
        )  # fmt: skip
        started.append(child)
        child.start()
        _wait_serving(child, api, probe)
        return Served(child, api, db, tls, created)

    try:
        yield start
    finally:
        for child in reversed(started):
            child.stop(timeout=10)


def _wait_serving(child: Child, api: str, credentials: grpc.ChannelCredentials | None) -> None:
    """Poll gRPC health until SERVING; fail at once, with the log, if serve exited."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert child.alive(), f"serve exited:\n{child.log_tail()}"
        channel = (
            grpc.secure_channel(api, credentials) if credentials else grpc.insecure_channel(api)
        )
        with channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        assert time.monotonic() < deadline, f"serve not healthy in time:\n{child.log_tail()}"
        time.sleep(0.1)  # poll interval, not synchronisation: the deadline bounds the wait


# --- bearer tokens over plaintext loopback --------------------------------------------


def test_token_auth_through_the_cli(serve: Serve) -> None:
    server = serve(tokens={"root": ("root", "admin"), "vic": ("vic", "viewer")})
    tokens = server.tokens

    # No token at all: UNAUTHENTICATED, and the CLI says how to pass one.
    anonymous = refused(server.cli("ls"), "UNAUTHENTICATED")
    assert "missing credentials" in anonymous and "--token" in anonymous
    refused(server.cli("sidecars"), "UNAUTHENTICATED")
    refused(server.cli("ls", token="fp_bogus.not-a-token"), "UNAUTHENTICATED")

    # A viewer reads, but may not pull the freeze lever or the big red button.
    ok(server.cli("ls", token=tokens["vic"]))
    assert json.loads(ok(server.cli("sidecars", "--json", token=tokens["vic"]))) == []
    denied = refused(
        server.cli("freeze", "--reason", "x", token=tokens["vic"]), "PERMISSION_DENIED"
    )
    assert "role viewer may not call Freeze" in denied
    refused(server.cli("abort", "--all", token=tokens["vic"]), "PERMISSION_DENIED")

    # An admin, with the token from the environment (as the README shows).
    as_root = {"FAULTPLANE_TOKEN": tokens["root"]}
    frozen = ok(server.cli("freeze", "--reason", "release", "--until", "+3600", env=as_root))
    assert "by root: release" in frozen
    ok(server.cli("unfreeze", env=as_root))
    ok(server.cli("abort", "--all", env=as_root))
    # --token wins over the environment: a viewer's flag with root's variable is a viewer.
    refused(server.cli("unfreeze", token=tokens["vic"], env=as_root), "PERMISSION_DENIED")

    # Every refusal above is in the audit log, with who it was.
    audit = json.loads(ok(server.cli("audit", "--json", env=as_root)))
    outcomes = {(e["entry"].get("principal"), e["entry"].get("method"), e["entry"].get("outcome"))
                for e in audit}  # fmt: skip
    assert ("unknown", "ListInjections", "UNAUTHENTICATED") in outcomes
    assert ("vic", "Freeze", "PERMISSION_DENIED") in outcomes
    assert ("root", "Freeze", "OK") in outcomes


def test_a_token_created_or_revoked_while_serving_takes_effect(serve: Serve) -> None:
    server = serve()
    late = server.token("olive", "operator")  # issued on the store file the server runs on
    ok(server.cli("ls", token=late))

    listed = json.loads(ok(run_cli("token", "list", "--json", "--db", str(server.db))))
    (olive,) = [t for t in listed if t["principal"] == "olive"]
    ok(run_cli("token", "revoke", olive["id"], "--db", str(server.db)))

    assert f"unknown or revoked token {olive['id']}" in refused(
        server.cli("ls", token=late), "UNAUTHENTICATED"
    )


# --- TLS -------------------------------------------------------------------------------


def test_server_tls_with_bearer_tokens(
    serve: Serve,
    pki: Pki,  # noqa: F811
) -> None:
    """TLS without client certificates: the CLI verifies the server with --ca, and the
    bearer token is still what authenticates."""
    server = serve(
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        tls=("--ca", str(pki.ca)),
        probe=channel_credentials(pki.ca),
        tokens={"root": ("root", "admin"), "vic": ("vic", "viewer")},
    )  # fmt: skip
    tokens = server.tokens

    refused(server.cli("ls"), "UNAUTHENTICATED")
    ok(server.cli("ls", token=tokens["vic"]))
    refused(server.cli("freeze", "--reason", "x", token=tokens["vic"]), "PERMISSION_DENIED")
    ok(server.cli("freeze", "--reason", "x", token=tokens["root"]))
    # Plaintext to a TLS port never gets as far as authentication.
    plaintext = run_cli("ls", "--api", server.api, "--token", tokens["root"])
    refused(plaintext, "UNAVAILABLE")


def test_mutual_tls_the_certificate_subject_is_the_principal(
    serve: Serve,
    pki: Pki,  # noqa: F811
) -> None:
    alice = ("--ca", str(pki.ca), "--cert", str(pki.alice_cert), "--key", str(pki.alice_key))
    server = serve(
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--client-ca", str(pki.ca),
        tls=alice,
        probe=channel_credentials(pki.ca, pki.alice_cert, pki.alice_key),
        tokens={"alice": (ALICE, "viewer"), "alice-admin": (ALICE, "admin"),
                "root": ("root", "admin")},
    )  # fmt: skip
    tokens = server.tokens

    # A verified certificate alone names alice, but serve maps no subject to a role.
    assert f"certificate subject {ALICE!r} has no role" in refused(
        server.cli("ls"), "UNAUTHENTICATED"
    )
    # Her token gives her role; someone else's token on her connection is refused.
    ok(server.cli("ls", token=tokens["alice"]))
    refused(server.cli("freeze", "--reason", "x", token=tokens["alice"]), "PERMISSION_DENIED")
    assert "was issued to 'root'" in refused(
        server.cli("freeze", "--reason", "x", token=tokens["root"]), "UNAUTHENTICATED"
    )
    frozen = ok(server.cli("freeze", "--reason", "mtls", token=tokens["alice-admin"]))
    assert f"by {ALICE}: mtls" in frozen

    # Without a client certificate, or with one from another CA, there is no connection.
    no_cert = run_cli("ls", "--api", server.api, "--ca", str(pki.ca), "--token", tokens["root"])
    refused(no_cert, "UNAVAILABLE")
    rogue = run_cli(
        "ls", "--api", server.api, "--ca", str(pki.ca), "--cert", str(pki.mallory_cert),
        "--key", str(pki.mallory_key), "--token", tokens["root"],
    )  # fmt: skip
    refused(rogue, "UNAVAILABLE")
