"""One-time sign-in links to the owner page (contract sections 4 and 5), shared by the
notices dispatcher (links in e-mail and SMS notices), the registry API (which exchanges
them for owner tokens) and ``platereg run`` (the demo owner's link in the banner).

A link carries a random token (256 bits) as the ``token`` query parameter of
``PLATEREG_OWNER_PAGE_URL``; only its SHA-256 is stored, in ``owner_tokens``
(migration 0006), valid ``LINK_DAYS`` days and usable once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from urllib.parse import urlencode

import asyncpg

LINK_DAYS = 14
#: The query parameter of the owner page URL that carries the link's token.
LINK_PARAMETER = "token"


def link_token_hash(token: str) -> str:
    """What ``owner_tokens.token_hash`` holds for ``token`` (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def link_url(owner_page_url: str, token: str) -> str:
    sep = "&" if "?" in owner_page_url else "?"
    return f"{owner_page_url}{sep}{urlencode({LINK_PARAMETER: token})}"


async def mint_link_token(conn: asyncpg.Connection | asyncpg.Pool, owner_id: str,
                          notice_id: uuid.UUID | None, now: dt.datetime | None = None,
                          days: int = LINK_DAYS) -> str:
    """Store a new one-time token for ``owner_id`` (hash only) and return the token."""
    now = now or dt.datetime.now(dt.UTC)
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO owner_tokens (token_hash, owner_id, notice_id, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)", link_token_hash(token), owner_id, notice_id, now,
        now + dt.timedelta(days=days))
    return token


async def mint_sign_in_link(conn: asyncpg.Connection | asyncpg.Pool, owner_page_url: str,
                            owner_id: str, notice_id: uuid.UUID | None = None,
                            now: dt.datetime | None = None) -> str:
    """A one-time owner page link for ``owner_id`` (optionally tied to a notice)."""
    return link_url(owner_page_url, await mint_link_token(conn, owner_id, notice_id, now))
