"""Helpers of the registry consumer tests: event factory, a reference fold written
independently of ``schemas.fold``, producing, and waiting for the consumer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import orjson

from platereg.kafka import make_producer
from platereg.settings import Settings
from schemas import topics
from schemas.signing import Signer

BASE_TIME = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
#: The signed producer every test database has (source prefix "/", registered in the
#: template database by conftest): what the test helpers, the ingest API, import and
#: simulate sign as unless a test says otherwise.
TEST_PRODUCER = "tests"
TEST_PRODUCER_SECRET = "dGVzdHMtb25seS1zZWNyZXQtbm90LWZvci1wcm9kdWN"  # noqa: S105 - tests only
REASONS = ["insurance_lapsed", "unpaid_fines", "emissions_failed", "court_order",
           "administrative"]


#: A source the default source policy allows for each suspension reason.
REASON_SOURCES = {"insurance_lapsed": "/insurance/test/", "unpaid_fines": "/fines/test/",
                  "emissions_failed": "/emissions/test/", "court_order": "/courts/test/",
                  "administrative": "/registry/test/"}


def source_for(kind: str, data: dict | None = None) -> str:
    """A source the default source policy allows to send this event."""
    if kind in ("plate.stolen_reported", "plate.recovered"):
        return "/police/test/"
    reason = (data or {}).get("reason")
    if kind in ("plate.suspended", "plate.reinstated") and reason is not None:
        return REASON_SOURCES[reason]
    return "/registry/test/office/1"


def event(kind: str, subject: str, time: dt.datetime, data: dict | None = None,
          id: str | None = None, source: str | None = None) -> dict:
    ev = {"specversion": "1.0", "id": id or str(uuid.uuid4()),
          "source": source or source_for(kind, data),
          "type": kind, "time": time.isoformat().replace("+00:00", "Z"), "subject": subject}
    if data is not None:
        ev["data"] = data
    return ev


def owner(rng: random.Random, n: int) -> dict:
    o = {"owner_id": f"own-{n}", "name": f"Owner {n}"}
    if rng.random() < 0.5:
        o["email"] = f"o{n}@example.org"
    if rng.random() < 0.3:
        o["language"] = rng.choice(["en", "fr"])
    return o


def random_event(rng: random.Random, subject: str, time: dt.datetime) -> dict:
    """One valid event of a random type (issued is the most frequent)."""
    kind = rng.choice(["plate.issued"] * 3 + [
        "plate.renewed", "plate.suspended", "plate.reinstated", "plate.stolen_reported",
        "plate.recovered", "plate.transferred", "plate.owner_updated", "plate.cancelled",
        "plate.device_paired", "plate.device_unpaired"])
    n = rng.randrange(1000)
    day = (BASE_TIME.date() + dt.timedelta(days=rng.randrange(-400, 800))).isoformat()
    if kind == "plate.issued":
        data: dict[str, Any] | None = {
            "plate_class": rng.choice(["passenger", "commercial", "vanity"]),
            "expires_on": day,
            "vehicle": {"vin": f"VIN{n}", "make": "Honda", "model": "Civic",
                        "year": 2000 + n % 25, "colour": rng.choice(["blue", "red"])},
            "owner": owner(rng, n)}
        if rng.random() < 0.3:
            data["device_id"] = f"dev-{n}"
    elif kind == "plate.renewed":
        data = {"expires_on": day}
    elif kind == "plate.suspended":
        data = {"reason": rng.choice(REASONS)}
    elif kind == "plate.reinstated":
        data = {"reason": rng.choice(REASONS)} if rng.random() < 0.6 else {}
    elif kind == "plate.stolen_reported":
        data = {"agency": "OPP", "report_id": f"r{n}"}
    elif kind == "plate.recovered":
        data = {}
    elif kind == "plate.transferred":
        data = {"owner": owner(rng, n)}
    elif kind == "plate.owner_updated":
        data = rng.choice([{"name": f"Renamed {n}"}, {"email": f"new{n}@example.org"},
                           {"language": "fr"}, {"phone": "+15551234567", "language": "en"}])
    elif kind == "plate.cancelled":
        data = {"reason": "surrendered"}
    elif kind == "plate.device_paired":
        data = {"device_id": f"dev-{n}"}
    else:
        data = None
    return event(kind, subject, time, data, id=f"ev-{rng.getrandbits(48):012x}")


def random_events(rng: random.Random, plates: list[str], count: int,
                  minutes: int = 500) -> list[dict]:
    """Events with colliding times (so the id decides the order) in random order."""
    return [random_event(rng, rng.choice(plates),
                         BASE_TIME + dt.timedelta(minutes=rng.randrange(minutes)))
            for _ in range(count)]


# --------------------------------------------------------------------------- reference fold

def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def reference_fold(events: Iterable[dict]) -> dict[str, dict]:
    """Plate key -> expected fields: the contract's fold, written from the contract."""
    by_plate: dict[str, list[dict]] = {}
    for ev in events:
        by_plate.setdefault(ev["subject"], []).append(ev)
    result = {}
    for key, evs in by_plate.items():
        # (time, id) as the contract says; source breaks a tie of the two
        evs = sorted(evs, key=lambda e: (_instant(e["time"]), e["id"], e["source"]))
        s: dict[str, Any] = {"issued": False, "plate_class": None, "expires_on": None,
                             "vehicle": None, "owner": None, "device_id": None,
                             "suspension_reasons": set(), "stolen": False, "cancelled": False}
        for ev in evs:
            d = ev.get("data") or {}
            t = ev["type"]
            if t == "plate.issued":
                s["issued"], s["cancelled"] = True, False
                s["plate_class"], s["expires_on"] = d["plate_class"], d["expires_on"]
                s["vehicle"] = d["vehicle"]
                s["owner"] = {"language": "en", **d["owner"]}
                if "device_id" in d:
                    s["device_id"] = d["device_id"]
            elif t == "plate.renewed":
                s["expires_on"] = d["expires_on"]
            elif t == "plate.suspended":
                s["suspension_reasons"].add(d["reason"])
            elif t == "plate.reinstated":
                if "reason" in d:
                    s["suspension_reasons"].discard(d["reason"])
                else:
                    s["suspension_reasons"].clear()
            elif t == "plate.stolen_reported":
                s["stolen"] = True
            elif t == "plate.recovered":
                s["stolen"] = False
            elif t == "plate.transferred":
                s["owner"] = {"language": "en", **d["owner"]}
            elif t == "plate.owner_updated":
                if s["owner"] is not None:
                    s["owner"] = {**s["owner"], **d}
            elif t == "plate.cancelled":
                s["cancelled"] = True
            elif t == "plate.device_paired":
                s["device_id"] = d["device_id"]
            elif t == "plate.device_unpaired":
                s["device_id"] = None
        s["suspension_reasons"] = sorted(s["suspension_reasons"])
        s["event_count"] = len(evs)
        s["last_event_id"] = evs[-1]["id"]
        result[key] = s
    return result


def row_fields(row: asyncpg.Record) -> dict:
    return {
        "issued": row["issued"], "plate_class": row["plate_class"],
        "expires_on": row["expires_on"].isoformat() if row["expires_on"] else None,
        "vehicle": row["vehicle"], "owner": row["owner"], "device_id": row["device_id"],
        "suspension_reasons": sorted(row["suspension_reasons"]), "stolen": row["stolen"],
        "cancelled": row["cancelled"], "event_count": row["event_count"],
        "last_event_id": row["last_event_id"],
    }


async def stored_plates(pool: asyncpg.Pool) -> dict[str, dict]:
    return {r["plate_key"]: row_fields(r) for r in await pool.fetch("SELECT * FROM plates")}


def unique_first(events: Iterable[dict]) -> list[dict]:
    """The first event of each (source, id) (duplicates in these tests are identical copies)."""
    seen: dict[tuple[str, str], dict] = {}
    for ev in events:
        seen.setdefault((ev["source"], ev["id"]), ev)
    return list(seen.values())


# --------------------------------------------------------------------------- Kafka

async def produce(settings: Settings, messages: Iterable[tuple[Any, ...]],
                  topic: str | None = None, *, signer: Signer | None | bool = True,
                  **producer_options: Any) -> dict[int, int]:
    """Produce (key, value) or (key, value, headers) messages fast; returns partition ->
    log end after them. Each is signed (``schemas.signing``) as the settings' producer
    (the tests' one, registered in every test database), or as ``signer``;
    ``signer=False``: sent as given, unsigned."""
    if signer is True:
        signer = settings.signer()
    producer = make_producer(settings, **producer_options)
    await producer.start()
    ends: dict[int, int] = {}
    try:
        futures = []
        for key, value, *rest in messages:
            headers = list(rest[0]) if rest else []
            if signer:
                headers = signer.headers(value, headers)
            futures.append(await producer.send(topic or settings.topic(topics.EVENTS),
                                               key=key, value=value, headers=headers or None))
        for fut in futures:
            md = await fut
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


def encoded(events: Iterable[dict]) -> list[tuple[bytes, bytes]]:
    return [(ev["subject"].encode(), orjson.dumps(ev)) for ev in events]


async def wait_offsets(pool: asyncpg.Pool, settings: Settings, ends: dict[int, int],
                       timeout: float = 60.0, proc: subprocess.Popen | None = None,
                       at_least: bool = False) -> None:
    """Wait until the stored offsets equal ``ends`` (partition -> next offset), or reach
    them with ``at_least``."""
    deadline = time.monotonic() + timeout
    stored: dict[int, int] = {}
    while time.monotonic() < deadline:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 "
            "AND topic = $2", settings.consumer_group, settings.topic(topics.EVENTS))
        stored = {r["partition"]: r["next_offset"] for r in rows}
        if all(stored.get(p, 0) == o or (at_least and stored.get(p, 0) >= o)
               for p, o in ends.items()):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"consumer exited with {proc.returncode}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"consumer did not catch up: stored {stored}, log ends {ends}")


async def merge_ends(*ends: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for e in ends:
        for p, o in e.items():
            out[p] = max(out.get(p, 0), o)
    return out


@contextlib.asynccontextmanager
async def consumer_running(settings: Settings, **options: Any) -> AsyncIterator[Any]:
    """The real consumer in this process (with its relays), stopped cleanly on exit."""
    from registry.consumer.loop import RegistryConsumer
    from registry.consumer.relay import run_relays
    from wiring.cli import batch_hook

    stop = asyncio.Event()
    wakeup = asyncio.Event()
    options.setdefault("batch_hook", batch_hook())    # the hook `platereg consume registry` runs
    consumer = RegistryConsumer(settings, on_commit=wakeup, **options)
    tasks = [asyncio.create_task(consumer.run(stop)),
             asyncio.create_task(run_relays(settings, stop, wakeup, idle=0.2))]
    try:
        yield consumer
    finally:
        stop.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for result in done:
            if isinstance(result, BaseException):
                raise result


def start_consumer_process(settings: Settings, *extra: str,
                           log_path: str | None = None) -> subprocess.Popen:
    """``platereg consume registry`` as a child process (metrics on a free port)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "wiring.cli", "consume", "registry", "--metrics-port", "0",
         *extra],
        env={**os.environ, "PLATEREG_LOG_LEVEL": "INFO"}, stdin=subprocess.DEVNULL,
        stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("consumer did not stop within the timeout") from None
