"""The notices outbox: ``notices`` rows -> ``plates.notices``, after commit.

Rows are relayed by the generic outbox relay (``platereg.outbox``) in ``seq``
order, keyed by plate key, and marked ``published_at`` once acknowledged.
The message holds no contact data: the dispatcher reads the recipient from
the database by ``notice_id``.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import orjson

from platereg.outbox import FlagOutbox, OutboxRecord, run_relay
from platereg.settings import Settings
from schemas import topics

# pg_try_advisory_lock(int, int) keys of the notices relay: "plat", "noti".
LEADER_LOCK = (0x706C6174, 0x6E6F7469)


def notice_message(r: asyncpg.Record | dict) -> dict:
    """The contract's notice message for a ``notices`` row."""
    jurisdiction, _, plate = r["plate_key"].partition("/")
    created = r["created_at"].astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"notice_id": str(r["notice_id"]), "kind": r["kind"], "jurisdiction": jurisdiction,
            "plate": plate, "owner_id": r["owner_id"], "language": r["language"],
            "channels": list(r["channels"]), "created_at": created,
            "context": r["context"] or {}}


def _record(r: asyncpg.Record) -> OutboxRecord:
    return OutboxRecord(r["notice_id"], r["plate_key"].encode(), orjson.dumps(notice_message(r)))


notices_outbox = FlagOutbox(
    name="notices", table="notices", id_column="notice_id", id_type="uuid[]",
    columns="kind, plate_key, owner_id, language, channels, created_at, context",
    topic_name=topics.NOTICES, to_record=_record, order_by="seq")


async def run_notices_relay(settings: Settings, stop: asyncio.Event,
                            wakeup: asyncio.Event | None = None, idle: float = 0.5) -> None:
    await run_relay(settings, [notices_outbox], stop, wakeup, lock=LEADER_LOCK, idle=idle)
