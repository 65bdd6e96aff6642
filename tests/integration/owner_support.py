"""Helpers for the owner access tests: settings with an owner token key, notices with
delivery attempts, plate reads through whichever plate route the API has."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import asyncpg
import httpx

OWNER_KEY = "k" * 40
PREVIOUS_KEY = "p" * 40


async def insert_notice(pool: asyncpg.Pool, owner_id: str, plate_key: str, kind: str,
                        attempts: list[tuple[str, str]], *, context: dict[str, Any] | None = None,
                        created_at: dt.datetime | None = None) -> uuid.UUID:
    """A notice and its delivery attempts [(channel, outcome)], as the dispatcher leaves them."""
    notice_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO notices (notice_id, dedupe_key, kind, plate_key, owner_id, language,"
        " channels, context, created_at) VALUES ($1, $2, $3, $4, $5, 'en', $6, $7, $8)",
        notice_id, f"test:{notice_id}", kind, plate_key, owner_id,
        sorted({c for c, _ in attempts}) or ["email"], context or {},
        created_at or dt.datetime.now(dt.UTC))
    for n, (channel, outcome) in enumerate(attempts, 1):
        await pool.execute(
            "INSERT INTO notice_deliveries (notice_id, channel, attempt, outcome, status_code,"
            " error) VALUES ($1, $2, $3, $4, $5, $6)", notice_id, channel, n, outcome,
            503 if outcome != "sent" else None, None if outcome == "sent" else "HTTP 503")
    return notice_id


async def read_plate(client: httpx.AsyncClient, key: str, jurisdiction: str, plate: str,
                     purpose: str) -> httpx.Response:
    """One plate read by an API key with a purpose: ``POST /v1/plates/query``."""
    return await client.post("/v1/plates/query", headers={"Authorization": f"Bearer {key}"},
                             json={"jurisdiction": jurisdiction, "plate": plate,
                                   "purpose": purpose})


def form_fields(html: str, action: str = "/owner/sign-in") -> dict[str, str]:
    """The hidden fields of the page's form posting to ``action``."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}">(.*?)</form>', html,
                     re.S)
    assert form, html[:2000]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                           form.group(1)))


async def sign_in_with_link(client: httpx.AsyncClient, base: str, token: str,
                            **form: str) -> httpx.Response:
    """Open a sign-in link (GET: the page with one button), then press the button (POST)."""
    page = await client.get(f"{base}/owner/", params={"token": token})
    assert page.status_code == 200, page.text
    return await client.post(f"{base}/owner/sign-in", data={**form_fields(page.text), **form})
