"""Roles and what each may do on faultplane.v1.FaultService.

Authorization is a pure function of (role, method) plus, for calls that act on one
injection, the caller and the injection's owner. Keeping it here, away from the servicer,
lets the whole matrix be tested exhaustively and read in one place. Anything not listed
is refused: a new RPC is unreachable until someone decides who may call it.

Stopping is easier than starting. Every role that may act at all may stop: abort any
injection (not only its own), abort all of them, and freeze new ones. Starting is
guarded: creating needs `operator`, lifting a freeze (which lets injections start again)
needs `oncall` or `admin`, and approving someone else's injection needs `approver`.

  viewer    reads, and plans (a plan changes nothing)
  oncall    viewer + stop (abort any, abort-all, freeze) + unfreeze; never injects
  operator  viewer + stop + create
  approver  operator + approve other people's injections (never their own: the point of
            approval is a second pair of eyes)
  admin     everything, and others' injections as if their own (tokens are issued and
            revoked with the store's files, `faultplane token`, not over the API)

Unfreeze is deliberately not an operator's: a freeze set for peak trading must not be
lifted by the person who wants to inject. The on-call engineer who froze the mesh during
an incident lifts it afterwards.
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
    ONCALL = "oncall"
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
    READ = "read"  # look at injections, sidecars, freeze state, the audit log; plan
    STOP = "stop"  # abort any injection, abort all of them, freeze new ones
    LIFT_FREEZE = "lift_freeze"  # unfreeze: let injections start again
    INJECT = "inject"  # create injections
    APPROVE = "approve"  # approve someone else's injection


_READ_STOP = {Permission.READ, Permission.STOP}

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.VIEWER: frozenset({Permission.READ}),
        Role.ONCALL: frozenset({*_READ_STOP, Permission.LIFT_FREEZE}),
        Role.OPERATOR: frozenset({*_READ_STOP, Permission.INJECT}),
        Role.APPROVER: frozenset({*_READ_STOP, Permission.INJECT, Permission.APPROVE}),
        Role.ADMIN: frozenset(Permission),
    }
)

METHOD_PERMISSIONS: Mapping[str, Permission] = MappingProxyType(
    {
        "GetInjection": Permission.READ,
        "ListInjections": Permission.READ,
        "ListQueue": Permission.READ,
        "WatchInjections": Permission.READ,
        "ListSidecars": Permission.READ,
        "GetBaseline": Permission.READ,
        "GetFreeze": Permission.READ,
        "ListAudit": Permission.READ,
        "VerifyAudit": Permission.READ,
        "PlanInjection": Permission.READ,  # a dry run: it changes nothing
        "GetInjectionPlan": Permission.READ,
        "AbortInjection": Permission.STOP,
        "AbortAllInjections": Permission.STOP,
        "Freeze": Permission.STOP,
        "Unfreeze": Permission.LIFT_FREEZE,
        "CreateInjection": Permission.INJECT,
        "ApproveInjection": Permission.APPROVE,
        # The scheduler. A blackout only holds experiments back, like a freeze; lifting
        # one, or changing the policy (which may loosen it), is the unfreezer's. A
        # schedule injects; pausing or removing one stops.
        "ListBlackouts": Permission.READ,
        "GetPolicy": Permission.READ,
        "ListSchedules": Permission.READ,
        "AddBlackout": Permission.STOP,
        "RemoveBlackout": Permission.LIFT_FREEZE,
        "SetPolicy": Permission.LIFT_FREEZE,
        "CreateSchedule": Permission.INJECT,
        "ResumeSchedule": Permission.INJECT,
        "PauseSchedule": Permission.STOP,
        "RemoveSchedule": Permission.STOP,
    }
)

# Methods that act on one existing injection, where the owner matters (see may_act_on).
# AbortInjection is not one: anyone who may stop may stop anyone's fault.
OWNER_SCOPED = frozenset({"ApproveInjection"})


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

    Aborting is not owner-scoped: whoever may stop may stop anyone's injection (the audit
    names who stopped whose). Approvers approve only other people's (self-approval would
    defeat the second pair of eyes); admins may do anything to anyone's. For methods that
    are not owner-scoped this is may_call.
    """
    if not may_call(role, method):
        return False
    name = method_name(method)
    if role is Role.ADMIN or name not in OWNER_SCOPED:
        return True
    return principal != owner  # ApproveInjection, the one owner-scoped method


def may_claim_owner(principal: str, role: Role, owner: str) -> bool:
    """Whether a request's `owner` field is acceptable from this caller.

    The owner is the authenticated principal, not a free-text claim: an empty owner
    (meaning "me") or the caller's own name is fine; naming someone else is reserved to
    admins (e.g. to file an injection on behalf of an on-call engineer).
    """
    return owner in ("", principal) or role is Role.ADMIN
