"""Rejections: one test per DLQ reason, read back from the real dead-letter topic.

One consumer run (module fixture) gets, on one partition per reason, a good
event, the bad message, and another good event; each test checks its reason.
The run's metrics (this process's registry) are checked against what it was sent.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from platereg.db import create_pool
from platereg.kafka import ensure_topics
from platereg.settings import load_settings
from schemas import topics as contract
from tests.integration.consumer_support import (
    TEST_PRODUCER,
    TEST_PRODUCER_SECRET,
    consumer_running,
    event,
    produce,
    wait_offsets,
)
from tests.integration.kafka_support import read_topic
from tests.integration.seam_support import metric, wait_for

pytestmark = pytest.mark.integration

REASONS = ["malformed_json", "too_large", "schema_invalid", "unknown_type", "invalid_plate",
           "future_time", "id_conflict"]


def _renewal(now: dt.datetime, subject: str, minutes: int, id: str | None = None,
             day: str = "2030-01-01") -> dict:
    return event("plate.renewed", subject, now - dt.timedelta(minutes=minutes),
                 {"expires_on": day}, id=id)


def _bad(now: dt.datetime, reason: str, subject: str, before: dict) -> bytes:
    good = _renewal(now, subject, 5)
    if reason == "malformed_json":
        return b"{this is not json"
    if reason == "too_large":
        return orjson.dumps({**good, "padding": "x" * (100 * 1024)})   # 100 KiB event
    if reason == "schema_invalid":
        return orjson.dumps({k: v for k, v in good.items() if k != "source"})
    if reason == "unknown_type":
        return orjson.dumps({**good, "type": "plate.painted"})
    if reason == "invalid_plate":
        return orjson.dumps({**good, "subject": "CA-ON/NOT A PLATE!"})
    if reason == "future_time":
        later = (now + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        return orjson.dumps({**good, "time": later})
    if reason == "id_conflict":      # same id as the accepted event before it, other content
        return orjson.dumps({**before, "data": {"expires_on": "2031-06-30"}})
    raise AssertionError(reason)


def _samples() -> dict:
    """This process's metrics: {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in REGISTRY.collect() for s in family.samples}




@pytest.fixture(scope="module")
async def dlq_run(servers, template_db):
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(servers.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await admin.close()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = load_settings(database_url=servers.dsn_for(name),
                             kafka_bootstrap_servers=servers.bootstrap, topic_prefix=prefix,
                             events_partitions=4, consumer_group=f"registry-{prefix}",
                             producer_name=TEST_PRODUCER, producer_secret=TEST_PRODUCER_SECRET)
    await ensure_topics(settings)
    pool = await create_pool(settings.dsn(), min_size=1, max_size=3)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)   # when the run starts
    cases = {}
    messages = []
    for i, reason in enumerate(REASONS):
        subject = f"CA-QC/DLQ{i}"
        issued = event("plate.issued", subject, now - dt.timedelta(days=1), {
            "plate_class": "passenger", "expires_on": "2029-01-01",
            "vehicle": {"vin": "V1", "make": "Kia", "model": "Rio", "year": 2020,
                        "colour": "red"},
            "owner": {"owner_id": f"o{i}", "name": "Test Owner"}})
        before = _renewal(now, subject, 30, day="2029-06-01")
        after = _renewal(now, subject, 10, day="2029-12-31")
        bad = _bad(now, reason, subject, before)
        cases[reason] = {"subject": subject, "bad": bad, "after": after}
        messages += [(subject.encode(), orjson.dumps(e)) for e in (issued, before)]
        messages += [(subject.encode(), bad), (subject.encode(), orjson.dumps(after))]
    before_run = _samples()
    async with consumer_running(settings, max_records=3):
        ends = await produce(settings, messages, max_request_size=8 << 20)
        await wait_offsets(pool, settings, ends)

        async def caught_up() -> bool:   # the lag gauge of every partition read back to 0
            lags = {lab: v for (n, lab), v in _samples().items() if n == "platereg_consumer_lag"}
            return len(lags) == settings.events_partitions and not any(lags.values())

        await wait_for(caught_up, "the consumer lag to reach 0")
        lag_samples = _samples()

        async def published() -> bool:
            return not await pool.fetchval(
                "SELECT count(*) FROM dlq_messages WHERE published_at IS NULL")

        await wait_for(published, "the DLQ relay")
    run = {"messages": len(messages), "before": before_run, "after": _samples(),
           "lag": lag_samples}
    dlq = await read_topic(settings, settings.topic(contract.DLQ), at_least=len(REASONS))
    yield settings, pool, cases, dlq, run
    await pool.close()
    admin = await asyncpg.connect(servers.admin_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.mark.parametrize("reason", REASONS)
async def test_rejection_goes_to_the_dlq_and_the_partition_moves_on(dlq_run, reason) -> None:
    settings, pool, cases, dlq, _ = dlq_run
    case = cases[reason]
    mine = [r for r in dlq if r.value == case["bad"]]
    assert len(mine) == 1, f"expected exactly one DLQ message with the original bytes, got " \
                           f"{len(mine)} of {len(dlq)}"
    msg = mine[0]
    headers = {k: v.decode() for k, v in msg.headers}
    assert headers["x-dlq-reason"] == reason
    assert headers["x-dlq-detail"]
    assert headers["x-original-topic"] == settings.topic(contract.EVENTS)
    row = await pool.fetchrow("SELECT * FROM dlq_messages WHERE reason = $1", reason)
    assert row["published_at"] is not None
    assert headers["x-original-partition"] == str(row["partition"])
    assert headers["x-original-offset"] == str(row["kafka_offset"])
    assert msg.key == case["subject"].encode()
    # the good event after the bad one was applied (and the conflict did not replace the first)
    plate = await pool.fetchrow("SELECT expires_on, event_count FROM plates WHERE plate_key = $1",
                                case["subject"])
    assert plate["expires_on"] == dt.date(2029, 12, 31)
    assert plate["event_count"] == 3
    stored = await pool.fetchval("SELECT count(*) FROM plate_events WHERE plate_key = $1",
                                 case["subject"])
    assert stored == 3


async def test_every_reason_was_counted_once(dlq_run) -> None:
    _, pool, _, dlq, _ = dlq_run
    rows = await pool.fetch("SELECT reason, count(*) AS n FROM dlq_messages GROUP BY reason")
    assert {r["reason"]: r["n"] for r in rows} == {reason: 1 for reason in REASONS}
    assert len(dlq) == len(REASONS)


async def test_the_run_moved_the_metrics_by_what_it_was_sent(dlq_run) -> None:
    _, _, _, _, run = dlq_run

    def delta(name: str, **labels: str) -> float:
        return metric(run["after"], name, **labels) - metric(run["before"], name, **labels)

    n = len(REASONS)
    assert delta("platereg_events_total", outcome="rejected") == n
    assert delta("platereg_events_total", outcome="applied") == 3 * n
    assert delta("platereg_events_total", type="plate.issued", outcome="applied") == n
    assert delta("platereg_events_total", type="plate.renewed", outcome="applied") == 2 * n
    assert delta("platereg_events_total", outcome="duplicate") == 0
    for reason in REASONS:
        assert delta("platereg_dlq_total", reason=reason) == 1, reason
    # one latency observation per record of a committed batch, bad ones included
    assert delta("platereg_event_apply_latency_seconds_count") == run["messages"]
    assert delta("platereg_event_apply_latency_seconds_sum") > 0
    lags = [v for (name, _), v in run["lag"].items() if name == "platereg_consumer_lag"]
    assert lags == [0.0] * 4
