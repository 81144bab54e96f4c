"""Authentication and authorization for the operator API.

Leaf code: it decides, the servicer enforces and audits. The store is reached only
through the `TokenLookup` protocol.
"""

from faultplane.auth.principal import (
    LOCAL_MODE_WARNING,
    LOCAL_PRINCIPAL,
    SUBJECT_KEY,
    Authenticator,
    Principal,
    TokenLookup,
    TokenRecord,
    Unauthenticated,
    check_local_bind,
)
from faultplane.auth.roles import (
    METHOD_PERMISSIONS,
    Permission,
    PermissionDenied,
    Role,
    UnknownRole,
    check_call,
    may_act_on,
    may_call,
    may_claim_owner,
    method_name,
    roles_for,
)
from faultplane.auth.tokens import MalformedToken, new_token, token_hash

__all__ = [
    "LOCAL_MODE_WARNING",
    "LOCAL_PRINCIPAL",
    "METHOD_PERMISSIONS",
    "SUBJECT_KEY",
    "Authenticator",
    "MalformedToken",
    "Permission",
    "PermissionDenied",
    "Principal",
    "Role",
    "TokenLookup",
    "TokenRecord",
    "Unauthenticated",
    "UnknownRole",
    "check_call",
    "check_local_bind",
    "may_act_on",
    "may_call",
    "may_claim_owner",
    "method_name",
    "new_token",
    "roles_for",
    "token_hash",
]
