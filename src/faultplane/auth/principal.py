"""Who is calling: a bearer token, a verified client certificate, or local mode.

How the principal and role are decided:

- local mode: everyone is Principal("local", admin, "local"). No credentials are read.
  It exists so the demo stays two commands; `check_local_bind` keeps it on loopback and
  the server must log `LOCAL_MODE_WARNING` at start.
- mTLS (the connection carries a verified client certificate): the principal is the
  certificate subject as gRPC reports it in the auth context's `x509_subject`, an
  RFC 2253 string with the most specific part first, e.g. "CN=alice,O=sre" (the same as
  `openssl x509 -noout -subject -nameopt RFC2253`). The role comes from
    1. a bearer token presented on the same call, which must have been issued to that
       exact subject (`token create --principal "CN=alice,O=sre"`); an unknown, revoked
       or someone else's token is refused rather than ignored; else
    2. the configured `mtls_roles` mapping subject -> role; else
    3. `mtls_default_role`, if configured; else the call is refused.
  The subject is trustworthy because `tls.server_credentials` always requires and
  verifies client certificates against the client CA; gRPC only reports `x509_subject`
  for a certificate the handshake presented.
- token (no client certificate): `authorization: Bearer <token>`; the token's record
  gives the principal and role.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from faultplane.auth.roles import Role, UnknownRole
from faultplane.auth.tokens import MalformedToken, token_hash, token_id_of

SUBJECT_KEY = "x509_subject"  # grpc auth_context key for the verified peer cert subject
Via = Literal["token", "mtls", "local"]
Mode = Literal["token", "local"]

LOCAL_MODE_WARNING = (
    "LOCAL MODE: authentication is OFF; every caller is 'local' with the admin role. "
    "The operator API is bound to loopback only. Do not use this on a shared host."
)


class TokenRecord(Protocol):
    """What the store returns for a live token: its id, owner and role."""

    @property
    def id(self) -> str: ...
    @property
    def principal(self) -> str: ...
    @property
    def role(self) -> Any: ...  # a Role or its name


class TokenLookup(Protocol):
    """The store's tokens (`Store.tokens`), as far as authentication needs them. Revoked
    tokens must return None."""

    def find(self, token_hash: str) -> TokenRecord | None: ...


class Unauthenticated(Exception):
    """No acceptable credentials. `reason` is safe to return and to audit (no secrets);
    `principal` / `token_id` say who it was, where that is known (for the audit log)."""

    def __init__(
        self, reason: str, *, principal: str | None = None, token_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.principal = principal
        self.token_id = token_id


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    via: Via
    token_id: str | None = None  # the token that authenticated or gave the role, if any


LOCAL_PRINCIPAL = Principal("local", Role.ADMIN, "local")

Metadata = Iterable[tuple[str, str | bytes]]
AuthContext = Mapping[str, Sequence[bytes]]


class Authenticator:
    """Turns a call's metadata and TLS auth context into a Principal, or refuses it."""

    def __init__(
        self,
        lookup: TokenLookup | None,
        mode: Mode = "token",
        *,
        mtls_roles: Mapping[str, Role | str] | None = None,
        mtls_default_role: Role | str | None = None,
    ) -> None:
        if mode not in ("token", "local"):
            raise ValueError(f"unknown auth mode {mode!r}; valid modes: token, local")
        if mode == "token" and lookup is None:
            raise ValueError("token mode needs a token lookup (the store)")
        self._lookup = lookup
        self.mode: Mode = mode
        self._mtls_roles = {subject: Role.parse(r) for subject, r in (mtls_roles or {}).items()}
        self._default = None if mtls_default_role is None else Role.parse(mtls_default_role)

    def authenticate(self, metadata: Metadata | None, auth_context: AuthContext) -> Principal:
        """The caller, from `context.invocation_metadata()` and `context.auth_context()`.

        Raises Unauthenticated (-> UNAUTHENTICATED). Role checks are the caller's next
        step (roles.check_call -> PERMISSION_DENIED). Nothing here compares secrets:
        tokens are looked up by hash, so a timing difference could reveal only bits of a
        SHA-256 digest, which do not help forge a token.
        """
        if self.mode == "local":
            return LOCAL_PRINCIPAL
        token = _bearer_token(metadata or ())
        subject = _subject(auth_context)
        if subject is None:
            if token is None:
                raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
            return self._from_token(token)
        if token is not None:
            try:
                principal = self._from_token(token)
            except Unauthenticated as exc:
                raise Unauthenticated(
                    exc.reason, principal=subject, token_id=exc.token_id
                ) from None
            if principal.name != subject:
                raise Unauthenticated(
                    f"token {principal.token_id} was issued to {principal.name!r}, "
                    f"not to the certificate subject {subject!r}",
                    principal=subject,
                    token_id=principal.token_id,
                )
            return Principal(subject, principal.role, "mtls", principal.token_id)
        role = self._mtls_roles.get(subject, self._default)
        if role is None:
            raise Unauthenticated(
                f"certificate subject {subject!r} has no role: present a token issued to it "
                "or map the subject to a role",
                principal=subject,
            )
        return Principal(subject, role, "mtls")

    def _from_token(self, token: str) -> Principal:
        try:
            token_id = token_id_of(token)
        except MalformedToken as exc:
            raise Unauthenticated(f"malformed bearer token: {exc}") from None
        assert self._lookup is not None  # token mode always has one (checked in __init__)
        record = self._lookup.find(token_hash(token))
        if record is None:
            raise Unauthenticated(f"unknown or revoked token {token_id}", token_id=token_id)
        if record.id != token_id:
            # The hash matched but the record is another token's: a store bug; fail closed.
            raise Unauthenticated(f"token {token_id} does not match its record", token_id=token_id)
        try:
            role = Role.parse(record.role)
        except UnknownRole:
            raise Unauthenticated(
                f"token {token_id} has an unknown role", token_id=token_id
            ) from None
        return Principal(record.principal, role, "token", token_id)


def _bearer_token(metadata: Metadata) -> str | None:
    """The token from the single `authorization: Bearer <token>` header, or None."""
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthenticated("malformed authorization header: not ASCII") from None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("malformed authorization header: expected 'Bearer <token>'")
    credentials = credentials.strip()
    if not credentials:
        raise Unauthenticated("malformed authorization header: empty bearer token")
    return credentials


def _subject(auth_context: AuthContext) -> str | None:
    """The verified client certificate's subject, or None without a client certificate."""
    values = auth_context.get(SUBJECT_KEY) or ()
    if not values:
        return None
    if len(values) != 1:
        raise Unauthenticated("more than one client certificate subject")
    try:
        subject = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Unauthenticated("client certificate subject is not UTF-8") from None
    if not subject:
        raise Unauthenticated("client certificate has an empty subject")
    return subject


def check_local_bind(host: str) -> None:
    """Refuse local (no-auth) mode on anything but a loopback address.

    `host` is the API bind host: "localhost", an IPv4/IPv6 loopback address, or "[::1]".
    """
    name = host.strip().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"local mode (no authentication) binds only to loopback, not {host!r}; "
            "use 127.0.0.1 or configure tokens"
        )
