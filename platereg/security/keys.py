"""API keys: creation, hashing, listing and revocation.

A key looks like ``prk_<key_id>_<secret>``. The key id is public (it appears
in audit rows and logs); the secret is 32 random bytes, shown once and stored
only as its SHA-256 (a fast hash is enough for a random 256-bit secret, and it
keeps authentication cheap on the lookup hot path).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

ROLES = ("enforcement", "portal", "operator", "ingest")
_KEY_RE = re.compile(r"^prk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class InvalidKey(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: str
    rate_limit: float | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    sources: tuple[str, ...] = ()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str]:
    """(key_id, secret) of a well-formed key, else InvalidKey."""
    match = _KEY_RE.match(token)
    if not match:
        raise InvalidKey("malformed API key")
    return match.group(1), match.group(2)


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def check_sources(role: str, sources: Sequence[str]) -> list[str]:
    """The source prefixes of a new key: required (one or more) for ``ingest``, refused
    for the other roles (they publish nothing). Each has at least one path segment:
    ``/`` (or ``//``) would match every source."""
    if role != "ingest":
        if sources:
            raise ValueError("--source is for ingest keys only")
        return []
    if not sources:
        raise ValueError("an ingest key needs at least one --source prefix "
                         "(e.g. --source /insurance/acme/)")
    out = []
    for prefix in sources:
        if not prefix or len(prefix) > 512 or not prefix.isprintable():
            raise ValueError("a source prefix must be 1 to 512 printable characters")
        if not any(prefix.split("/")):
            raise ValueError(f"source prefix {prefix!r} has no path segment: it would let "
                             "the key speak for every source; name at least one, e.g. "
                             "--source /insurance/acme/")
        out.append(prefix)
    return sorted(set(out))


async def create_key(conn: asyncpg.Connection | asyncpg.Pool, *, role: str, name: str,
                     rate_limit: float | None = None,
                     sources: Sequence[str] = ()) -> tuple[str, str]:
    """Store a new key; returns (key_id, full key). The full key is never stored.

    An ``ingest`` key is bound to ``sources`` (source prefixes, at least one): the
    ingest API publishes for it only events whose ``source`` starts with one of them.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    prefixes = check_sources(role, sources)
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise ValueError("name must be 1 to 200 printable characters")
    if rate_limit is not None and not rate_limit > 0:
        raise ValueError("rate limit must be positive")
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (key_id, name, role, secret_hash, rate_limit, sources)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        key_id, name, role, hash_secret(secret), rate_limit, prefixes,
    )
    return key_id, f"prk_{key_id}_{secret}"


async def bind_sources(conn: asyncpg.Connection | asyncpg.Pool, key_id: str,
                       sources: Sequence[str]) -> bool:
    """Replace the source prefixes of an active ingest key (e.g. one made before keys had
    sources); False when there is no such key."""
    prefixes = check_sources("ingest", sources)
    status = await conn.execute(
        "UPDATE api_keys SET sources = $2 WHERE key_id = $1 AND role = 'ingest'"
        " AND revoked_at IS NULL", key_id, prefixes)
    return status.endswith(" 1")


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT key_id, name, role, rate_limit, created_at, revoked_at, sources FROM api_keys"
        " ORDER BY created_at"
    )
    return [ApiKey(**{**dict(r), "sources": tuple(r["sources"] or ())}) for r in rows]


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> bool:
    """Revoke a key; False when no such active key exists."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return status.endswith(" 1")
