"""Owner sessions: minting owner tokens (portal or one-time sign-in link), checking
them, ending them, and the per-owner mint limits.

* Every mint inserts an ``owner_sessions`` row (the token carries its id), under a
  per-owner advisory lock, after counting the mints of the last hour in its own
  budget: sign-in links per owner (``PLATEREG_OWNER_SESSIONS_PER_HOUR``, the owner's
  own budget) and portal mints per owner and portal key
  (``PLATEREG_OWNER_PORTAL_SESSIONS_PER_HOUR``), so a portal can use up neither the
  owner's sign-ins nor another portal's. Past a limit the mint is refused with the
  seconds until the oldest mint leaves the window. The limits hold across processes.
* A sign-in link (``owner_tokens``, migration 0006) is found by the SHA-256 of its
  token. :func:`peek_link` only reads it (opening a link shows a page, it uses
  nothing); :func:`exchange_link` locks it, checks it (unknown, used, expired) and
  marks it used in the same transaction as the session it becomes, so it works once
  even when two requests race, and a link refused by the limit is not used up.
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


@dataclass(frozen=True)
class Link:
    """A sign-in link as :func:`peek_link` finds it: whose, whether it can still be used
    (``refused``: None, ``used`` or ``expired``) and the language to speak about it."""
    owner_id: str
    refused: str | None
    language: str | None


async def _check_limit(conn: asyncpg.Connection, owner_id: str, via: str, key_id: str | None,
                       limit: int, now: dt.datetime) -> None:
    """MintLimited when this budget (``via``; for a portal, its key) is used up."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('owner_sessions'), "
                       "hashtext($1))", owner_id)
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM owner_sessions"
        " WHERE owner_id = $1 AND created_at > $2 AND via = $3"
        " AND key_id IS NOT DISTINCT FROM $4", owner_id, now - WINDOW, via, key_id)
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
    """An owner token for an owner the portal signed in itself (MintLimited past the
    portal key's budget for this owner)."""
    async with pool.acquire() as conn, conn.transaction():
        await _check_limit(conn, owner_id, "portal", key_id, limit, now)
        return await _insert(conn, tokens, owner_id, "portal", key_id, None, now)


def _refusal(link: asyncpg.Record, now: dt.datetime) -> str | None:
    if link["used_at"] is not None:
        return "used"
    if link["expires_at"] <= now:
        return "expired"
    return None


async def peek_link(pool: asyncpg.Pool, link_token: str, now: dt.datetime) -> Link:
    """What a link is, without using it (LinkRefused for an unknown one). The language is
    the owner's chosen one, else that of the notice that carried the link."""
    link = await pool.fetchrow(
        "SELECT t.owner_id, t.expires_at, t.used_at,"
        " coalesce((SELECT p.language FROM owner_preferences p WHERE p.owner_id = t.owner_id),"
        " (SELECT n.language FROM notices n WHERE n.notice_id = t.notice_id)) AS language"
        " FROM owner_tokens t WHERE t.token_hash = $1", link_token_hash(link_token))
    if link is None:
        raise LinkRefused("unknown")
    return Link(link["owner_id"], _refusal(link, now), link["language"])


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
        if (refused := _refusal(link, now)) is not None:
            raise LinkRefused(refused)
        await _check_limit(conn, link["owner_id"], "link", None, limit, now)
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
