"""API tokens and the audit trail of the operator console (pure: no I/O).

A token is 32 random bytes (``secrets.token_urlsafe``) behind a recognisable prefix. Only
its SHA-256 is stored. A slow password hash (bcrypt, argon2) protects *low-entropy*
secrets from guessing after a database leak; a 256-bit random token cannot be guessed
whatever the hash, and a fast hash lets every request find its token by one indexed
lookup of the hash instead of trying a slow comparison against every stored token.
Nothing secret-dependent is compared byte by byte in Python: the lookup is by hash, and
the hash found is compared again with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# What every token starts with: recognisable in a leaked file or a secret scanner.
PREFIX = "dsk_"
TOKEN_BYTES = 32
# Names are for people and for the audit log: short, no spaces, no personal data.
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A presented token longer than this is not ours; it is refused before being hashed.
MAX_TOKEN_CHARS = 128


class TokenScope(StrEnum):
    """What a token may do: ``read`` looks, ``operate`` also acts (pause, cancel, ...)."""

    READ = "read"
    OPERATE = "operate"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token: never the secret itself, only its hash."""

    id: int
    name: str
    scope: TokenScope
    token_hash: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action someone took: who (a token name), what, on which job, when, from where."""

    actor: str
    action: str
    outcome: str  # "ok", or why it was refused ("conflict", "not_found", ...)
    client: str  # the client's address as the listener saw it
    job_id: int | None = None
    detail: str | None = None  # counts or a status; never addresses or variables
    at: datetime | None = None
    id: int | None = None


def mint_token() -> tuple[str, str]:
    """A new token and its hash: ``(secret, token_hash)``. The secret is shown once."""
    secret = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return secret, token_hash(secret)


def token_hash(secret: str) -> str:
    """The stored form of a token (hex SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hashes_match(presented_hash: str, stored_hash: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(presented_hash.encode(), stored_hash.encode())


def looks_like_token(secret: str) -> bool:
    """Whether a presented string could be one of our tokens at all (cheap pre-check)."""
    return secret.startswith(PREFIX) and len(secret) <= MAX_TOKEN_CHARS


def valid_token_name(name: str) -> bool:
    """1 to 64 characters: letters, digits, ``.``, ``_``, ``-``, starting alphanumeric."""
    return TOKEN_NAME.fullmatch(name) is not None
