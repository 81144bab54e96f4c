"""Roles and what each may do on faultplane.v1.FaultService.

Authorization is a pure function of (role, method) plus, for calls that act on one
injection, the caller and the injection's owner. Keeping it here, away from the servicer,
lets the whole matrix be tested exhaustively and read in one place. Anything not listed
is refused: a new RPC is unreachable until someone decides who may call it.

Roles are cumulative: viewer < operator < approver < admin. An approver is a senior
operator who can also sign off other people's injections (never their own: the point of
approval is a second pair of eyes); an admin can do everything, including the
mesh-wide actions (abort-all, freeze) and token management.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

SERVICE = "faultplane.v1.FaultService"


class UnknownRole(ValueError):
    """A role name that is not one of ours; the message lists the valid ones."""


class PermissionDenied(Exception):
    """The caller's role may not do this; `reason` is safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        """Parse a role from a flag, a config file or a stored token (case-insensitive)."""
        if isinstance(value, Role):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            valid = ", ".join(role.value for role in cls)
            raise UnknownRole(f"unknown role {value!r}; valid roles: {valid}") from None


class Permission(StrEnum):
    READ = "read"  # look at injections, sidecars, freeze state, the audit log
    INJECT = "inject"  # create, plan and abort one's own injections
    APPROVE = "approve"  # approve someone else's injection
    ADMINISTER = "administer"  # mesh-wide actions and tokens


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.VIEWER: frozenset({Permission.READ}),
        Role.OPERATOR: frozenset({Permission.READ, Permission.INJECT}),
        Role.APPROVER: frozenset({Permission.READ, Permission.INJECT, Permission.APPROVE}),
        Role.ADMIN: frozenset(Permission),
    }
)

METHOD_PERMISSIONS: Mapping[str, Permission] = MappingProxyType(
    {
        "GetInjection": Permission.READ,
        "ListInjections": Permission.READ,
        "WatchInjections": Permission.READ,
        "ListSidecars": Permission.READ,
        "GetBaseline": Permission.READ,
        "GetFreeze": Permission.READ,
        "ListAudit": Permission.READ,
        "VerifyAudit": Permission.READ,
        "CreateInjection": Permission.INJECT,
        "PlanInjection": Permission.INJECT,
        "AbortInjection": Permission.INJECT,
        "ApproveInjection": Permission.APPROVE,
        "AbortAllInjections": Permission.ADMINISTER,
        "Freeze": Permission.ADMINISTER,
        "Unfreeze": Permission.ADMINISTER,
        "CreateToken": Permission.ADMINISTER,
        "ListTokens": Permission.ADMINISTER,
        "RevokeToken": Permission.ADMINISTER,
    }
)

# Methods that act on one existing injection, where the owner matters (see may_act_on).
OWNER_SCOPED = frozenset({"AbortInjection", "ApproveInjection"})


def method_name(method: str) -> str:
    """`/faultplane.v1.FaultService/X` (as interceptors see it) -> `X`; short names pass.

    Another service's path maps to itself, which is in no row and so is refused.
    """
    prefix = f"/{SERVICE}/"
    return method.removeprefix(prefix) if method.startswith(prefix) else method


def roles_for(method: str) -> frozenset[Role]:
    """The roles that may call `method` (empty for an unknown method)."""
    permission = METHOD_PERMISSIONS.get(method_name(method))
    if permission is None:
        return frozenset()
    return frozenset(role for role, perms in ROLE_PERMISSIONS.items() if permission in perms)


def may_call(role: Role, method: str) -> bool:
    """Whether `role` may call `method` at all (owner rules are checked separately)."""
    permission = METHOD_PERMISSIONS.get(method_name(method))
    return permission is not None and permission in ROLE_PERMISSIONS[role]


def check_call(role: Role, method: str) -> None:
    """Raise PermissionDenied, naming the roles that would do, unless may_call."""
    if may_call(role, method):
        return
    allowed = [r.value for r in Role if r in roles_for(method)]
    name = method_name(method)
    if not allowed:
        raise PermissionDenied(f"{name} is not callable by any role")
    raise PermissionDenied(f"role {role.value} may not call {name}; needs {' or '.join(allowed)}")


def may_act_on(principal: str, role: Role, owner: str, method: str = "AbortInjection") -> bool:
    """Whether `principal` may call `method` on an injection owned by `owner`.

    Operators and approvers abort only their own injections; approvers approve only
    other people's (self-approval would defeat the second pair of eyes); admins may do
    anything to anyone's. For methods that are not owner-scoped this is may_call.
    """
    if not may_call(role, method):
        return False
    name = method_name(method)
    if role is Role.ADMIN or name not in OWNER_SCOPED:
        return True
    if name == "ApproveInjection":
        return principal != owner
    return principal == owner


def may_claim_owner(principal: str, role: Role, owner: str) -> bool:
    """Whether a request's `owner` field is acceptable from this caller.

    The owner is the authenticated principal, not a free-text claim: an empty owner
    (meaning "me") or the caller's own name is fine; naming someone else is reserved to
    admins (e.g. to file an injection on behalf of an on-call engineer).
    """
    return owner in ("", principal) or role is Role.ADMIN
