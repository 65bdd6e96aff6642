"""Helpers of the seam tests (where the consumer, the relays, the topics and the API meet):
expected views from the reference fold, reading whole topics, waiting on conditions,
and reading a child process's /metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from platereg.settings import Settings
from schemas import topics

STATUS_ORDER = ("stolen", "cancelled", "suspended", "expired")


def expected_view(key: str, s: dict, today: dt.date, with_owner: bool) -> dict:
    """The view of a reference-fold state (tests/integration/consumer_support.py), built
    from the contract's words, without ``as_of``."""
    j, p = key.split("/")
    holds = {"stolen": s["stolen"], "cancelled": s["cancelled"],
             "suspended": bool(s["suspension_reasons"]),
             "expired": s["expires_on"] is not None
             and today > dt.date.fromisoformat(s["expires_on"])}
    flags = [f for f in STATUS_ORDER if holds[f]]
    vehicle = s["vehicle"]
    view = {"jurisdiction": j, "plate": p, "status": flags[0] if flags else "valid",
            "flags": flags, "expires_on": s["expires_on"], "plate_class": s["plate_class"],
            "suspension_reasons": s["suspension_reasons"],
            "vehicle": None if vehicle is None else {
                k: vehicle[k] for k in ("make", "model", "year", "colour")},
            "smart_plate": s["device_id"] is not None, "version": s["event_count"]}
    if with_owner:
        o = s["owner"]
        view["owner"] = None if o is None else {
            k: o.get(k) for k in ("owner_id", "name", "email", "phone", "language")}
    return view


def without_as_of(view: dict) -> dict:
    return {k: v for k, v in view.items() if k != "as_of"}


def as_published(view: dict) -> dict:
    """A view as a status change carries it: without ``as_of`` and ``version`` (a change is
    recorded when what enforcement sees changes; later events that change nothing there,
    such as an owner update, publish no new change, so the stored version can be older)."""
    return {k: v for k, v in view.items() if k not in ("as_of", "version")}


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0,
                   every: float = 0.1) -> Any:
    """Poll ``check`` (a function or a coroutine function) until it returns something
    truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def wait_relayed(pool: asyncpg.Pool, settings: Settings, timeout: float = 60.0) -> None:
    """Until the relays published every status change and every rejection."""
    name = f"status:{settings.topic(topics.STATUS)}"

    async def done() -> bool:
        top = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM status_changes")
        cursor = await pool.fetchval("SELECT last_seq FROM relay_cursors WHERE name = $1", name)
        unpublished = await pool.fetchval(
            "SELECT count(*) FROM dlq_messages WHERE published_at IS NULL")
        return (cursor or 0) >= top and unpublished == 0

    await wait_for(done, "the relays to publish the outboxes", timeout)




def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == name and all((k, str(x)) in lab for k, x in labels.items()))


async def scrape(port: int) -> dict:
    async with httpx.AsyncClient() as client:
        return parse_metrics((await client.get(f"http://127.0.0.1:{port}/metrics")).text)


def listening_ports(text: str) -> list[int]:
    """The metrics ports in a consumer log's "ops server listening" lines (console or JSON
    format), oldest first."""
    found = (re.search(r'\bport"?[=:] ?(\d+)', line) for line in text.splitlines()
             if "ops server listening" in line)
    return [int(m.group(1)) for m in found if m]


async def ops_port(log_path: str, timeout: float = 30.0) -> int:
    """The metrics port a child consumer printed when it started."""
    async def check() -> int | None:
        ports = listening_ports(log_text(log_path))
        return ports[-1] if ports else None

    return await wait_for(check, "the consumer's ops server", timeout)


def held_partitions(log_path: str) -> set[int]:
    """The partitions a consumer process holds by its log: its last "partitions assigned"
    line, less those of any "partitions revoked" line after it. A consumer logs its
    assignment only once it has sought to the stored offsets, and its revocation before it
    rejoins the group, so mid-rebalance it holds none of the partitions it is giving up."""
    held: set[int] = set()
    for m in re.finditer(r"partitions (assigned|revoked).*?partitions=\[([0-9, ]*)\]",
                         log_text(log_path)):
        parts = {int(p) for p in m.group(2).split(",") if p.strip()}
        held = parts if m.group(1) == "assigned" else held - parts
    return held


def settled(log_paths: list[str], everyone: set[int]) -> bool:
    """True once these consumers hold every partition between them, each some and none
    twice: the group's assignment settled on them alone (not a stale line of one beside the
    new one of another)."""
    held = [held_partitions(path) for path in log_paths]
    return all(held) and sum(map(len, held)) == len(everyone) and set().union(*held) == everyone


def log_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()
