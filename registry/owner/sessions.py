"""Owner sessions: minting owner tokens (portal or one-time sign-in link), checking
them, ending them, and the per-owner mint limit.

* Every mint inserts an ``owner_sessions`` row (the token carries its id), under a
  per-owner advisory lock, after counting the owner's mints of the last hour: past
  ``PLATEREG_OWNER_SESSIONS_PER_HOUR`` the mint is refused with the seconds until
  the oldest one leaves the window. The limit holds across processes.
* A sign-in link (``owner_tokens``, migration 0006) is found by the SHA-256 of its
  token, locked, checked (unknown, used, expired) and marked used in the same
  transaction as the session it becomes, so it works once even when two requests
  race, and a link refused by the limit is not used up.
* A token is honoured while its signature is younger than the token lifetime and
  its session is neither expired nor revoked (sign-out revokes it).
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass

import asyncpg

from platereg.security.owner_links import link_token_hash
from registry.owner.tokens import OwnerClaims, OwnerTokens

WINDOW = dt.timedelta(hours=1)


class LinkRefused(Exception):
    """A sign-in link that cannot be used; ``reason`` is unknown, used or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MintLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many owner tokens for this owner")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Minted:
    token: str
    expires_at: dt.datetime
    owner_id: str
    session_id: str


async def _check_limit(conn: asyncpg.Connection, owner_id: str, limit: int,
                       now: dt.datetime) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('owner_sessions'), "
                       "hashtext($1))", owner_id)
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM owner_sessions"
        " WHERE owner_id = $1 AND created_at > $2", owner_id, now - WINDOW)
    if row["n"] >= limit:
        wait = (row["oldest"] + WINDOW - now).total_seconds()
        raise MintLimited(max(1, math.ceil(wait)))


async def _insert(conn: asyncpg.Connection, tokens: OwnerTokens, owner_id: str, via: str,
                  key_id: str | None, link_hash: str | None, now: dt.datetime) -> Minted:
    session_id = secrets.token_urlsafe(18)
    expires_at = now + dt.timedelta(seconds=tokens.lifetime)
    await conn.execute(
        "INSERT INTO owner_sessions (session_id, owner_id, via, key_id, link_hash, created_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        session_id, owner_id, via, key_id, link_hash, now, expires_at)
    return Minted(tokens.mint(owner_id, session_id), expires_at, owner_id, session_id)


async def mint_for_portal(pool: asyncpg.Pool, tokens: OwnerTokens, owner_id: str, key_id: str,
                          limit: int, now: dt.datetime) -> Minted:
    """An owner token for an owner the portal signed in itself (MintLimited past the limit)."""
    async with pool.acquire() as conn, conn.transaction():
        await _check_limit(conn, owner_id, limit, now)
        return await _insert(conn, tokens, owner_id, "portal", key_id, None, now)


async def exchange_link(pool: asyncpg.Pool, tokens: OwnerTokens, link_token: str, limit: int,
                        now: dt.datetime) -> Minted:
    """The owner token for a one-time sign-in link (LinkRefused, MintLimited)."""
    token_hash = link_token_hash(link_token)
    async with pool.acquire() as conn, conn.transaction():
        link = await conn.fetchrow(
            "SELECT owner_id, expires_at, used_at FROM owner_tokens WHERE token_hash = $1"
            " FOR UPDATE", token_hash)
        if link is None:
            raise LinkRefused("unknown")
        if link["used_at"] is not None:
            raise LinkRefused("used")
        if link["expires_at"] <= now:
            raise LinkRefused("expired")
        await _check_limit(conn, link["owner_id"], limit, now)
        await conn.execute("UPDATE owner_tokens SET used_at = $2 WHERE token_hash = $1",
                           token_hash, now)
        return await _insert(conn, tokens, link["owner_id"], "link", None, token_hash, now)


async def session_active(pool: asyncpg.Pool, claims: OwnerClaims, now: dt.datetime) -> bool:
    return bool(await pool.fetchval(
        "SELECT true FROM owner_sessions WHERE session_id = $1 AND owner_id = $2"
        " AND revoked_at IS NULL AND expires_at > $3", claims.session_id, claims.owner_id, now))


async def revoke(pool: asyncpg.Pool, claims: OwnerClaims, now: dt.datetime) -> None:
    await pool.execute(
        "UPDATE owner_sessions SET revoked_at = $3 WHERE session_id = $1 AND owner_id = $2"
        " AND revoked_at IS NULL", claims.session_id, claims.owner_id, now)
