"""Bearer tokens: `fpt_<id>_<secret>`, shown once, stored only as a hash.

The id is not secret: it names the token in `token list`, `token revoke` and the audit
log, and lets the authenticator check that the stored record is the one the token says
it is. The secret is 256 bits from `secrets`, so the token as a whole is unguessable.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "fpt"
ID_BYTES = 8  # 16 hex chars: unique enough to name a token, not a secret
SECRET_BYTES = 32  # 256 bits of entropy
_TOKEN_RE = re.compile(rf"^{PREFIX}_([0-9a-f]{{{2 * ID_BYTES}}})_([0-9a-f]{{{2 * SECRET_BYTES}}})$")


class MalformedToken(ValueError):
    """Not shaped like a faultplane token. The message never repeats the token."""


def new_token() -> tuple[str, str]:
    """A fresh (token_id, token). Print the token once; store only token_hash(token)."""
    token_id = secrets.token_hex(ID_BYTES)
    return token_id, f"{PREFIX}_{token_id}_{secrets.token_hex(SECRET_BYTES)}"


def token_id_of(token: str) -> str:
    """The id embedded in `token`, after checking its shape (raises MalformedToken)."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise MalformedToken(f"not a faultplane token (expected {PREFIX}_<id>_<secret>)")
    return match.group(1)


def token_hash(token: str) -> str:
    """SHA-256 hex of the whole token: what the store keeps and looks tokens up by.

    No salt or slow KDF: those protect low-entropy passwords from offline guessing. A
    token carries 256 random bits, so even a leaked hash table cannot be brute-forced,
    and an unsalted digest is deterministic, which lets the store index and look up a
    presented token by its hash in one query.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
