"""Governance: roles x methods, owner rules, tokens, the authenticator, and TLS/mTLS
against a real grpc.aio server on 127.0.0.1 (certificates made with the openssl CLI)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from faultplane.auth import (
    LOCAL_PRINCIPAL,
    Authenticator,
    Principal,
    Role,
    Unauthenticated,
    UnknownRole,
    check_call,
    check_local_bind,
    may_act_on,
    may_call,
    may_claim_owner,
    new_token,
    roles_for,
    token_hash,
)
from faultplane.auth.principal import SUBJECT_KEY
from faultplane.auth.roles import METHOD_PERMISSIONS, PermissionDenied, method_name
from faultplane.auth.tls import TLSConfigError, channel_credentials, server_credentials
from faultplane.auth.tokens import MalformedToken, token_id_of
from faultplane.v1 import faultplane_pb2

VW, OC, OP, AP, AD = Role.VIEWER, Role.ONCALL, Role.OPERATOR, Role.APPROVER, Role.ADMIN
EVERYONE = {VW, OC, OP, AP, AD}
STOPPERS = {OC, OP, AP, AD}  # stopping is easier than starting: everyone but a viewer

# Written out by hand, independently of roles.py, so a change there has to change this.
EXPECTED: dict[str, set[Role]] = {
    "GetInjection": EVERYONE,
    "ListInjections": EVERYONE,
    "ListQueue": EVERYONE,
    "WatchInjections": EVERYONE,
    "ListSidecars": EVERYONE,
    "GetBaseline": EVERYONE,
    "GetFreeze": EVERYONE,
    "ListAudit": EVERYONE,
    "VerifyAudit": EVERYONE,
    "PlanInjection": EVERYONE,  # a dry run changes nothing
    "GetInjectionPlan": EVERYONE,  # what was sent: a read
    "AbortInjection": STOPPERS,
    "AbortAllInjections": STOPPERS,
    "Freeze": STOPPERS,
    "Unfreeze": {OC, AD},  # lifting a freeze lets injections start: not an operator's call
    "CreateInjection": {OP, AP, AD},
    "ApproveInjection": {AP, AD},
    # The scheduler: a blackout holds back like a freeze; lifting one or changing the
    # policy is the unfreezer's; a schedule injects, pausing or removing one stops.
    "ListBlackouts": EVERYONE,
    "GetPolicy": EVERYONE,
    "ListSchedules": EVERYONE,
    "AddBlackout": STOPPERS,
    "RemoveBlackout": {OC, AD},
    "SetPolicy": {OC, AD},
    "CreateSchedule": {OP, AP, AD},
    "ResumeSchedule": {OP, AP, AD},
    "PauseSchedule": STOPPERS,
    "RemoveSchedule": STOPPERS,
}


# --- roles ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_role_method_matrix(method: str, role: Role) -> None:
    allowed = role in EXPECTED[method]
    assert may_call(role, method) is allowed
    assert may_call(role, f"/faultplane.v1.FaultService/{method}") is allowed
    if allowed:
        check_call(role, method)
    else:
        with pytest.raises(PermissionDenied, match=f"role {role.value} may not call {method}"):
            check_call(role, method)


def test_matrix_covers_exactly_the_listed_methods() -> None:
    assert set(METHOD_PERMISSIONS) == set(EXPECTED)
    assert {m: set(roles_for(m)) for m in EXPECTED} == EXPECTED


def test_the_rows_are_exactly_the_fault_service_rpcs() -> None:
    service = faultplane_pb2.DESCRIPTOR.services_by_name["FaultService"]
    assert {m.name for m in service.methods} == set(METHOD_PERMISSIONS)


@pytest.mark.parametrize(
    "method",
    ["Bogus", "/grpc.health.v1.Health/Check", "/other.Service/CreateInjection", ""],
)
@pytest.mark.parametrize("role", list(Role))
def test_unknown_methods_are_refused_for_everyone(method: str, role: Role) -> None:
    assert not may_call(role, method)
    assert roles_for(method) == frozenset()
    with pytest.raises(PermissionDenied, match="not callable by any role"):
        check_call(role, method)


def test_permission_denied_names_the_roles_that_would_do() -> None:
    with pytest.raises(PermissionDenied) as info:
        check_call(VW, "ApproveInjection")
    assert info.value.reason == "role viewer may not call ApproveInjection; needs approver or admin"


def test_method_name() -> None:
    assert method_name("/faultplane.v1.FaultService/Freeze") == "Freeze"
    assert method_name("Freeze") == "Freeze"


@pytest.mark.parametrize("text", ["viewer", "Operator", " APPROVER ", "admin", Role.ADMIN])
def test_role_parse(text: str) -> None:
    assert Role.parse(text).value == str(text).strip().lower()


def test_role_parse_error_names_valid_roles() -> None:
    with pytest.raises(
        UnknownRole, match="'root'; valid roles: viewer, oncall, operator, approver, admin"
    ):
        Role.parse("root")


def test_oncall_may_not_start_anything() -> None:
    with pytest.raises(PermissionDenied) as info:
        check_call(OC, "CreateInjection")
    assert info.value.reason == (
        "role oncall may not call CreateInjection; needs operator or approver or admin"
    )
    assert not may_call(OC, "ApproveInjection") and not may_call(OC, "CreateInjection")


# --- owner rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "principal", "owner", "method", "expected"),
    [
        # abort: anyone who may stop may stop anyone's fault; viewers never
        (VW, "vic", "vic", "AbortInjection", False),
        (VW, "vic", "bob", "AbortInjection", False),
        (OC, "oscar", "bob", "AbortInjection", True),
        (OP, "olga", "olga", "AbortInjection", True),
        (OP, "olga", "bob", "AbortInjection", True),
        (AP, "pat", "pat", "AbortInjection", True),
        (AP, "pat", "bob", "AbortInjection", True),
        (AD, "root", "bob", "AbortInjection", True),
        (AD, "root", "root", "AbortInjection", True),
        # approve: approvers only other people's, admins anyone's, others never
        (VW, "vic", "bob", "ApproveInjection", False),
        (OP, "olga", "bob", "ApproveInjection", False),
        (OP, "olga", "olga", "ApproveInjection", False),
        (AP, "pat", "bob", "ApproveInjection", True),
        (AP, "pat", "pat", "ApproveInjection", False),
        (AD, "root", "bob", "ApproveInjection", True),
        (AD, "root", "root", "ApproveInjection", True),
        # reads are not owner-scoped
        (VW, "vic", "bob", "GetInjection", True),
        (OC, "oscar", "bob", "ApproveInjection", False),
        # not owner-scoped: may_call decides
        (OP, "olga", "olga", "AbortAllInjections", True),
        (VW, "vic", "vic", "AbortAllInjections", False),
        (OP, "olga", "olga", "Unfreeze", False),
    ],
)
def test_may_act_on(role: Role, principal: str, owner: str, method: str, expected: bool) -> None:
    assert may_act_on(principal, role, owner, method) is expected


def test_may_act_on_defaults_to_abort() -> None:
    assert may_act_on("olga", OP, "olga")
    assert may_act_on("olga", OP, "bob")
    assert not may_act_on("vic", VW, "vic")


@pytest.mark.parametrize(
    ("role", "owner", "expected"),
    [
        (OP, "", True),  # empty owner means the caller
        (OP, "olga", True),
        (OP, "bob", False),
        (AP, "bob", False),
        (VW, "bob", False),
        (OC, "bob", False),
        (AD, "bob", True),
        (AD, "", True),
    ],
)
def test_may_claim_owner(role: Role, owner: str, expected: bool) -> None:
    assert may_claim_owner("olga" if role is not AD else "root", role, owner) is expected


# --- tokens --------------------------------------------------------------------------


def test_new_token_shape_and_entropy() -> None:
    token_id, token = new_token()
    assert re.fullmatch(r"fpt_[0-9a-f]{16}_[0-9a-f]{64}", token)
    assert token.startswith(f"fpt_{token_id}_")
    assert token_id_of(token) == token_id
    tokens = {new_token()[1] for _ in range(200)}
    assert len(tokens) == 200


def test_token_hash_is_sha256_hex_and_deterministic() -> None:
    _, token = new_token()
    digest = token_hash(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in digest
    assert token_hash(token) == digest
    assert token_hash(new_token()[1]) != digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fpt_",
        "secret",
        "fpt_0123456789abcdef_short",
        "fpt_0123456789ABCDEF_" + "0" * 64,
        "xyz_0123456789abcdef_" + "0" * 64,
        "fpt_0123456789abcdef_" + "0" * 64 + "\n",
    ],
)
def test_malformed_tokens(text: str) -> None:
    with pytest.raises(MalformedToken) as info:
        token_id_of(text)
    assert str(info.value) == "not a faultplane token (expected fpt_<id>_<secret>)"


# --- authenticator -------------------------------------------------------------------


@dataclass
class Record:
    id: str
    principal: str
    role: str


class FakeStore:
    """The TokenLookup protocol: find by hash; revoked tokens are not found."""

    def __init__(self) -> None:
        self.tokens: dict[str, Record] = {}

    def create(self, principal: str, role: str) -> str:
        token_id, token = new_token()
        self.tokens[token_hash(token)] = Record(token_id, principal, role)
        return token

    def revoke(self, token: str) -> None:
        del self.tokens[token_hash(token)]

    def find(self, token_hash: str) -> Record | None:
        return self.tokens.get(token_hash)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "test"), ("authorization", f"Bearer {token}")]


def cert(subject: str) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], SUBJECT_KEY: [subject.encode()]}


NO_TLS: dict[str, list[bytes]] = {"transport_security_type": [b"insecure"]}
ALICE = "CN=alice,O=sre"


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def test_token_authenticates(store: FakeStore) -> None:
    token = store.create("olga", "operator")
    principal = Authenticator(store).authenticate(bearer(token), NO_TLS)
    assert principal == Principal("olga", OP, "token", token_id_of(token))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(store: FakeStore, scheme: str) -> None:
    token = store.create("vic", "viewer")
    metadata = [("Authorization", f"{scheme}  {token} ")]
    assert Authenticator(store).authenticate(metadata, {}).name == "vic"


def test_bytes_metadata_value(store: FakeStore) -> None:
    token = store.create("vic", "viewer")
    metadata = [("authorization", f"Bearer {token}".encode())]
    assert Authenticator(store).authenticate(metadata, {}).role is VW


@pytest.mark.parametrize("metadata", [None, [], [("user-agent", "x")]])
def test_missing_token(store: FakeStore, metadata: list[tuple[str, str]] | None) -> None:
    with pytest.raises(Unauthenticated, match="missing credentials"):
        Authenticator(store).authenticate(metadata, NO_TLS)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "expected 'Bearer <token>'"),
        ("fpt_0123456789abcdef_" + "0" * 64, "expected 'Bearer <token>'"),
        ("Bearer", "empty bearer token"),
        ("Bearer   ", "empty bearer token"),
        ("Bearer not-a-token", "malformed bearer token"),
        (b"Bearer \xff", "not ASCII"),
    ],
)
def test_malformed_header(store: FakeStore, value: str | bytes, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=re.escape(reason)) as info:
        Authenticator(store).authenticate([("authorization", value)], NO_TLS)
    assert "not-a-token" not in info.value.reason  # never echo the credential


def test_two_authorization_headers(store: FakeStore) -> None:
    token = store.create("olga", "operator")
    metadata = [*bearer(token), ("authorization", f"Bearer {token}")]
    with pytest.raises(Unauthenticated, match="more than one"):
        Authenticator(store).authenticate(metadata, NO_TLS)


def test_unknown_token(store: FakeStore) -> None:
    token_id, token = new_token()
    with pytest.raises(Unauthenticated, match="unknown or revoked") as info:
        Authenticator(store).authenticate(bearer(token), NO_TLS)
    assert info.value.token_id == token_id
    assert token not in info.value.reason


def test_revoked_token(store: FakeStore) -> None:
    token = store.create("olga", "operator")
    auth = Authenticator(store)
    assert auth.authenticate(bearer(token), NO_TLS).name == "olga"
    store.revoke(token)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        auth.authenticate(bearer(token), NO_TLS)


def test_record_for_another_token_id_is_refused(store: FakeStore) -> None:
    token = store.create("olga", "operator")
    store.tokens[token_hash(token)].id = "ffffffffffffffff"
    with pytest.raises(Unauthenticated, match="does not match its record"):
        Authenticator(store).authenticate(bearer(token), NO_TLS)


def test_stored_role_that_is_not_a_role_is_refused(store: FakeStore) -> None:
    token = store.create("olga", "root")
    with pytest.raises(Unauthenticated, match="unknown role"):
        Authenticator(store).authenticate(bearer(token), NO_TLS)


def test_local_mode_is_admin_and_reads_nothing() -> None:
    auth = Authenticator(None, "local")
    assert auth.authenticate(None, {}) == LOCAL_PRINCIPAL == Principal("local", AD, "local")
    junk = [("authorization", "Basic nonsense")]
    assert auth.authenticate(junk, cert("CN=mallory")) == LOCAL_PRINCIPAL


def test_authenticator_configuration_errors(store: FakeStore) -> None:
    with pytest.raises(ValueError, match="needs a token lookup"):
        Authenticator(None, "token")
    with pytest.raises(ValueError, match="unknown auth mode"):
        Authenticator(store, "none")  # type: ignore[arg-type]
    with pytest.raises(UnknownRole):
        Authenticator(store, mtls_roles={ALICE: "superuser"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
def test_local_mode_binds_loopback(host: str) -> None:
    check_local_bind(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
def test_local_mode_refuses_other_binds(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        check_local_bind(host)


# mTLS role decisions, on the auth context gRPC reports (see the real-server tests).


def test_mtls_role_from_mapping(store: FakeStore) -> None:
    auth = Authenticator(store, mtls_roles={ALICE: "approver"})
    assert auth.authenticate([], cert(ALICE)) == Principal(ALICE, AP, "mtls")


def test_mtls_role_from_default(store: FakeStore) -> None:
    auth = Authenticator(store, mtls_roles={ALICE: "approver"}, mtls_default_role="viewer")
    assert auth.authenticate([], cert("CN=bob,O=sre")) == Principal("CN=bob,O=sre", VW, "mtls")


def test_mtls_subject_without_role_is_refused(store: FakeStore) -> None:
    auth = Authenticator(store, mtls_roles={ALICE: "approver"})
    with pytest.raises(Unauthenticated, match="has no role") as info:
        auth.authenticate([], cert("CN=bob,O=sre"))
    assert info.value.principal == "CN=bob,O=sre"


def test_mtls_role_from_token_issued_to_the_subject(store: FakeStore) -> None:
    token = store.create(ALICE, "admin")
    auth = Authenticator(store, mtls_roles={ALICE: "viewer"})
    principal = auth.authenticate(bearer(token), cert(ALICE))
    assert principal == Principal(ALICE, AD, "mtls", token_id_of(token))


def test_mtls_with_someone_elses_token_is_refused(store: FakeStore) -> None:
    token = store.create("root", "admin")
    auth = Authenticator(store, mtls_roles={ALICE: "viewer"})
    with pytest.raises(Unauthenticated, match="issued to 'root', not to") as info:
        auth.authenticate(bearer(token), cert(ALICE))
    assert info.value.principal == ALICE


def test_mtls_with_revoked_token_does_not_fall_back_to_mapping(store: FakeStore) -> None:
    token = store.create(ALICE, "admin")
    store.revoke(token)
    auth = Authenticator(store, mtls_roles={ALICE: "viewer"})
    with pytest.raises(Unauthenticated, match="unknown or revoked") as info:
        auth.authenticate(bearer(token), cert(ALICE))
    assert info.value.principal == ALICE


# --- TLS files -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    alice_cert: Path
    alice_key: Path
    rogue_ca: Path
    mallory_cert: Path
    mallory_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


NEW_P256_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _issue(d: Path, name: str, subject: str, ca: str, ext: str) -> None:
    """A P-256 key and a certificate for `subject`, signed by `ca`, with extensions `ext`."""
    key, csr, crt, extfile = (d / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    _openssl("req", "-new", *NEW_P256_KEY, "-keyout", key, "-out", csr, "-subj", subject)
    extfile.write_text(ext)
    _openssl(
        *("x509", "-req", "-in", csr, "-CA", d / f"{ca}.crt", "-CAkey", d / f"{ca}.key"),
        *("-CAcreateserial", "-days", "1", "-out", crt, "-extfile", extfile),
    )


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        *("req", "-x509", *NEW_P256_KEY, "-days", "1", "-subj", f"/CN={name}"),
        *("-keyout", d / f"{name}.key", "-out", d / f"{name}.crt"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    _issue(d, "server", "/CN=127.0.0.1", "ca", server_ext)
    # RDNs in DER order O, CN: gRPC reports them RFC 2253 style, most specific first.
    _issue(d, "alice", "/O=sre/CN=alice", "ca", "extendedKeyUsage=clientAuth\n")
    _issue(d, "mallory", "/O=sre/CN=mallory", "rogue-ca", "extendedKeyUsage=clientAuth\n")
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "alice.crt",
        d / "alice.key",
        d / "rogue-ca.crt",
        d / "mallory.crt",
        d / "mallory.key",
    )


def test_tls_credentials_build(pki: Pki) -> None:
    assert isinstance(server_credentials(pki.server_cert, pki.server_key), grpc.ServerCredentials)
    assert isinstance(
        server_credentials(pki.server_cert, pki.server_key, pki.ca), grpc.ServerCredentials
    )
    assert isinstance(channel_credentials(), grpc.ChannelCredentials)
    assert isinstance(
        channel_credentials(pki.ca, pki.alice_cert, pki.alice_key), grpc.ChannelCredentials
    )


def test_tls_missing_file_names_flag_and_path(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=f"--tls-key {re.escape(str(missing))}: cannot read"):
        server_credentials(pki.server_cert, missing)
    with pytest.raises(TLSConfigError, match=r"--client-ca .*: cannot read"):
        server_credentials(pki.server_cert, pki.server_key, missing)
    with pytest.raises(TLSConfigError, match=r"--ca .*: cannot read"):
        channel_credentials(ca=missing)
    with pytest.raises(TLSConfigError, match=r"--tls-cert .*: cannot read"):
        server_credentials(tmp_path, pki.server_key)  # a directory


def test_tls_wrong_contents(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match=r"--tls-cert .*: no PEM certificate"):
        server_credentials(pki.server_key, pki.server_key)
    with pytest.raises(TLSConfigError, match=r"--tls-key .*: no PEM private key"):
        server_credentials(pki.server_cert, pki.server_cert)
    with pytest.raises(TLSConfigError, match="not a matching certificate and key"):
        server_credentials(pki.server_cert, pki.alice_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigError, match=r"--client-ca .*: not a usable CA bundle"):
        server_credentials(pki.server_cert, pki.server_key, garbage)


def test_tls_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    _openssl("pkey", "-in", pki.alice_key, "-aes256", "-passout", "pass:pw", "-out", encrypted)
    with pytest.raises(TLSConfigError, match=r"--key .*: the key is encrypted"):
        channel_credentials(pki.ca, pki.alice_cert, encrypted)


def test_client_cert_and_key_go_together(pki: Pki) -> None:
    with pytest.raises(TLSConfigError, match="--cert and --key must be given together"):
        channel_credentials(pki.ca, cert=pki.alice_cert)
    with pytest.raises(TLSConfigError, match="--cert and --key must be given together"):
        channel_credentials(pki.ca, key=pki.alice_key)


# --- a real grpc.aio server on 127.0.0.1 ---------------------------------------------


class ProbeHandler(grpc.GenericRpcHandler):
    """Any method, raw bytes: authenticate, check the role for the method, answer who.

    This is the wiring the servicer is expected to do: Unauthenticated ->
    UNAUTHENTICATED, PermissionDenied -> PERMISSION_DENIED.
    """

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.calls: list[str] = []
        self.seen_contexts: list[dict[str, list[bytes]]] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]

        async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls.append(method)
            auth_context = context.auth_context()
            self.seen_contexts.append(auth_context)
            try:
                principal = self.auth.authenticate(context.invocation_metadata(), auth_context)
                check_call(principal.role, method)
            except Unauthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
            except PermissionDenied as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.reason)
            return f"{principal.name}|{principal.role}|{principal.via}".encode()

        return grpc.unary_unary_rpc_method_handler(behaviour)


@asynccontextmanager
async def serving(
    auth: Authenticator, credentials: grpc.ServerCredentials
) -> AsyncIterator[tuple[str, ProbeHandler]]:
    handler = ProbeHandler(auth)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", handler
    finally:
        await server.stop(grace=0)


READ = "/faultplane.v1.FaultService/ListInjections"
NOT_FOR_OPERATORS = "/faultplane.v1.FaultService/Unfreeze"


async def call(
    channel: grpc.aio.Channel, method: str = READ, token: str | None = None
) -> tuple[grpc.StatusCode, str]:
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    try:
        reply = await channel.unary_unary(method)(b"", metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, reply.decode()


async def test_mtls_principal_is_the_client_certificate_subject(pki: Pki, store: FakeStore) -> None:
    auth = Authenticator(store, mtls_roles={ALICE: "operator"})
    creds = server_credentials(pki.server_cert, pki.server_key, pki.ca)
    async with serving(auth, creds) as (target, handler):
        client = channel_credentials(pki.ca, pki.alice_cert, pki.alice_key)
        async with grpc.aio.secure_channel(target, client) as channel:
            assert await call(channel) == (grpc.StatusCode.OK, f"{ALICE}|operator|mtls")
            code, details = await call(channel, NOT_FOR_OPERATORS)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert details == "role operator may not call Unfreeze; needs oncall or admin"
            # A token issued to the same subject decides the role.
            admin = store.create(ALICE, "admin")
            assert await call(channel, NOT_FOR_OPERATORS, admin) == (
                grpc.StatusCode.OK,
                f"{ALICE}|admin|mtls",
            )
            # Someone else's token does not lend its identity to alice's certificate.
            root = store.create("root", "admin")
            code, details = await call(channel, NOT_FOR_OPERATORS, root)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "issued to 'root'" in details
    # What grpcio reports, pinned so a grpc upgrade that changes it fails here.
    context = handler.seen_contexts[0]
    assert context[SUBJECT_KEY] == [ALICE.encode()]
    assert context["x509_common_name"] == [b"alice"]
    assert context["transport_security_type"] == [b"ssl"]


async def test_mtls_unmapped_subject_is_unauthenticated(pki: Pki, store: FakeStore) -> None:
    auth = Authenticator(store)
    creds = server_credentials(pki.server_cert, pki.server_key, pki.ca)
    async with serving(auth, creds) as (target, _):
        client = channel_credentials(pki.ca, pki.alice_cert, pki.alice_key)
        async with grpc.aio.secure_channel(target, client) as channel:
            code, details = await call(channel)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "has no role" in details


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
async def test_mtls_refuses_clients_at_the_handshake(
    pki: Pki, store: FakeStore, client: str
) -> None:
    auth = Authenticator(store, mtls_default_role="admin")
    creds = server_credentials(pki.server_cert, pki.server_key, pki.ca)
    token = store.create(ALICE, "admin")  # a valid token does not get past the handshake
    if client == "no certificate":
        client_creds = channel_credentials(pki.ca)
    else:
        client_creds = channel_credentials(pki.ca, pki.mallory_cert, pki.mallory_key)
    async with (
        serving(auth, creds) as (target, handler),
        grpc.aio.secure_channel(target, client_creds) as channel,
    ):
        code, _ = await call(channel, READ, token)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []


@pytest.mark.parametrize("client_ca", [True, False], ids=["mtls", "tls"])
async def test_plaintext_client_cannot_connect(pki: Pki, store: FakeStore, client_ca: bool) -> None:
    auth = Authenticator(store, mtls_default_role="admin")
    creds = server_credentials(pki.server_cert, pki.server_key, pki.ca if client_ca else None)
    token = store.create("root", "admin")
    async with (
        serving(auth, creds) as (target, handler),
        grpc.aio.insecure_channel(target) as channel,
    ):
        code, _ = await call(channel, READ, token)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []


async def test_server_tls_with_bearer_token(pki: Pki, store: FakeStore) -> None:
    auth = Authenticator(store)
    creds = server_credentials(pki.server_cert, pki.server_key)
    token = store.create("olga", "operator")
    async with (
        serving(auth, creds) as (target, handler),
        grpc.aio.secure_channel(target, channel_credentials(pki.ca)) as channel,
    ):
        assert await call(channel, READ, token) == (grpc.StatusCode.OK, "olga|operator|token")
        code, details = await call(channel)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "missing credentials" in details
        assert (await call(channel, NOT_FOR_OPERATORS, token))[
            0
        ] == grpc.StatusCode.PERMISSION_DENIED
    assert SUBJECT_KEY not in handler.seen_contexts[0]


async def test_client_must_trust_the_server_ca(pki: Pki, store: FakeStore) -> None:
    creds = server_credentials(pki.server_cert, pki.server_key)
    async with serving(Authenticator(store), creds) as (target, handler):
        wrong_ca = channel_credentials(pki.rogue_ca)
        async with grpc.aio.secure_channel(target, wrong_ca) as channel:
            code, _ = await call(channel, READ, store.create("olga", "operator"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []
