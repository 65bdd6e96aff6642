"""The notice dispatcher end to end: notices made by applied events, relayed to
plates.notices on the real broker, delivered to a real SMTP server (aiosmtpd)
and real HTTP sinks, with retries, fallbacks, paper letters and a SIGKILL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from notifications.channels import verify
from notifications.relay import run_notices_relay
from platereg.kafka import make_consumer
from platereg.settings import Settings
from schemas import topics as contract
from schemas.fold import today_in
from schemas.notices import Notice
from tests.integration.notices_support import (
    MailCatcher,
    Request,
    apply_events,
    event,
    http_sink,
    issued,
    notices_running,
    owner,
    smtp_catcher,
    wait_until,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
FAST = {"notice_http_timeout_seconds": 1.0, "notice_retry_initial_seconds": 0.05,
        "notice_retry_max_seconds": 0.2}


@pytest.fixture
def smtp() -> Iterator[MailCatcher]:
    with smtp_catcher() as catcher:
        yield catcher


def with_(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={**FAST, **changes})


async def deliveries(pool: asyncpg.Pool, notice_id: object = None) -> list[tuple]:
    rows = await pool.fetch(
        "SELECT notice_id, channel, attempt, outcome, status_code FROM notice_deliveries "
        "WHERE $1::uuid IS NULL OR notice_id = $1 ORDER BY id", notice_id)
    return [tuple(r) for r in rows]


async def outcome_of(pool: asyncpg.Pool, kind: str, channel: str) -> list:
    return await pool.fetch(
        "SELECT d.* FROM notice_deliveries d JOIN notices n USING (notice_id) "
        "WHERE n.kind = $1 AND d.channel = $2 ORDER BY d.id", kind, channel)


async def test_email_notices_in_both_languages_over_real_smtp(
        topics: Settings, pool: asyncpg.Pool, smtp: MailCatcher) -> None:
    settings = with_(topics, smtp_port=smtp.port)
    before = NOW - dt.timedelta(hours=1)
    en = owner(1, language="en") | {"name": "Ann <b>&</b> Co"}
    fr = owner(2, language="fr")
    await apply_events(pool, settings, [
        issued("CA-ON/MAIL1", NOW.date() + dt.timedelta(days=300), before, en),
        issued("CA-QC/MAIL2", NOW.date() + dt.timedelta(days=300), before, fr),
        event("plate.suspended", "CA-ON/MAIL1", NOW - dt.timedelta(minutes=5),
              {"reason": "unpaid_fines"}, source="/fines/city/"),
        event("plate.suspended", "CA-QC/MAIL2", NOW - dt.timedelta(minutes=5),
              {"reason": "unpaid_fines"}, source="/fines/city/"),
    ], NOW)
    async with notices_running(settings):
        await wait_until(lambda: len(smtp.messages) >= 2, what="two e-mails")
        await wait_until(lambda: outcome_of(pool, "suspended", "email"), what="recorded")
    notices = {r["owner_id"]: r for r in await pool.fetch("SELECT * FROM notices")}
    by_to = {m["To"].addresses[0].addr_spec: m for m in smtp.messages}
    for o, words in ((en, "unpaid fines"), (fr, "amendes sont impayées")):
        msg, notice = by_to[o["email"]], notices[o["owner_id"]]
        assert msg["Message-ID"] == f"<{notice['notice_id']}.email@platereg.localhost>"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert words in text and words.replace("'", "&#39;") in html
        link = re.search(r"token=([A-Za-z0-9_-]+)", text).group(1)
        assert link in html
        stored = await pool.fetchrow("SELECT * FROM owner_tokens WHERE token_hash = $1",
                                     hashlib.sha256(link.encode()).hexdigest())
        assert stored["owner_id"] == o["owner_id"] and stored["used_at"] is None
        assert stored["expires_at"] - stored["created_at"] == dt.timedelta(days=14)
    assert "Ann &lt;b&gt;&amp;&lt;/b&gt; Co" in by_to[en["email"]].get_body(("html",)).get_content()
    assert [r["outcome"] for r in await outcome_of(pool, "suspended", "email")] == ["sent"] * 2
    # What went over plates.notices is the contract's message, without contact data.
    consumer = make_consumer(settings, settings.topic(contract.NOTICES))
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=5000)
        msgs = [r for rs in got.values() for r in rs]
    finally:
        await consumer.stop()
    assert len(msgs) >= 2
    for r in msgs:
        notice = Notice.model_validate_json(r.value)
        assert r.key.decode() == notice.plate_key and b"example.org" not in r.value


async def _stolen_plate_with_webhook(pool: asyncpg.Pool, settings: Settings, n: int,
                                     url: str) -> None:
    o = owner(n, email=False)
    await pool.execute("INSERT INTO owner_preferences (owner_id, channels, webhook_url) "
                       "VALUES ($1, '{webhook}', $2)", o["owner_id"], url)
    await apply_events(pool, settings, [
        issued(f"CA-ON/HOOK{n}", NOW.date() + dt.timedelta(days=300),
               NOW - dt.timedelta(hours=1), o),
        event("plate.stolen_reported", f"CA-ON/HOOK{n}", NOW - dt.timedelta(minutes=1),
              {"agency": "OPP", "report_id": "r1"}, source="/police/opp/")], NOW)


async def test_webhooks_to_the_registrys_own_network_are_refused(
        topics: Settings, pool: asyncpg.Pool) -> None:
    """A loopback webhook, by address or by a name resolving to it, fails at once (no
    retry, no request), and the notice falls back; a redirect is never followed."""
    async with http_sink() as sink, http_sink(
            lambda r: (302, {"Location": f"http://127.0.0.1:{sink.port}/inside"})) as outside:
        settings = with_(topics, notice_webhook_secrets=[SecretStr("s")])
        await _stolen_plate_with_webhook(pool, settings, 41, f"{sink.url}/hook")
        await _stolen_plate_with_webhook(pool, settings, 42, f"http://localhost:{sink.port}/h")
        await _stolen_plate_with_webhook(pool, settings, 43, f"http://[::1]:{sink.port}/h")
        async with notices_running(settings):
            await wait_until(lambda: _count(pool, "webhook", 3), what="three webhook outcomes")
            await wait_until(lambda: pool.fetchval(      # queued for the print file
                "SELECT count(*) = 3 FROM notice_dispatch WHERE channel = 'paper'"),
                what="the fallbacks")
        rows = await outcome_of(pool, "stolen_reported", "webhook")
        assert sorted((r["attempt"], r["outcome"], r["error"]) for r in rows) == [
            (1, "failed", "webhook address refused: loopback")] * 3
        assert sink.requests == []
        # Allowed to call 127.0.0.1, the dispatcher still does not follow a redirect.
        allowed = with_(topics, notice_webhook_secrets=[SecretStr("s")],
                        webhook_allow_private=True)
        await _stolen_plate_with_webhook(pool, allowed, 44, f"{outside.url}/hook")
        async with notices_running(allowed):
            await wait_until(lambda: _count(pool, "webhook", 4), what="the redirected one")
        [redirected] = [r for r in await outcome_of(pool, "stolen_reported", "webhook")
                        if r["status_code"] == 302]
        assert (redirected["outcome"], redirected["error"]) == ("failed", "HTTP 302")
        assert len(outside.requests) == 1 and sink.requests == []


async def _count(pool: asyncpg.Pool, channel: str, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM notice_deliveries WHERE channel = $1",
                               channel) >= n


async def test_webhook_is_signed_with_both_secrets(topics: Settings, pool: asyncpg.Pool) -> None:
    async with http_sink() as sink:   # on 127.0.0.1: allowed by the setting only
        settings = with_(topics, notice_webhook_secrets=[SecretStr("old-secret"),
                                                         SecretStr("new-secret")],
                         webhook_allow_private=True)
        o = owner(3, email=False)
        await pool.execute("INSERT INTO owner_preferences (owner_id, channels, webhook_url) "
                           "VALUES ($1, '{webhook}', $2)", o["owner_id"], sink.url + "/hook")
        await apply_events(pool, settings, [
            issued("CA-ON/HOOK1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), o),
            event("plate.stolen_reported", "CA-ON/HOOK1", NOW - dt.timedelta(minutes=1),
                  {"agency": "OPP", "report_id": "r1"}, source="/police/opp/")], NOW)
        async with notices_running(settings):
            await wait_until(lambda: outcome_of(pool, "stolen_reported", "webhook"))
        [req] = sink.requests
    notice_id = await pool.fetchval("SELECT notice_id FROM notices")
    assert req.headers["idempotency-key"] == f"{notice_id}:webhook"
    body = orjson.loads(req.body)
    assert body["notice_id"] == str(notice_id) and body["kind"] == "stolen_reported"
    header = req.headers["x-signature"]
    assert verify(header, req.body, "old-secret") and verify(header, req.body, "new-secret")
    assert not verify(header, req.body, "another-secret")
    t = int(header.split(",")[0].removeprefix("t="))
    assert not verify(header, req.body, "new-secret", now=t + 301)   # a stale t is refused


async def test_503_twice_then_200_is_one_success_with_every_attempt_recorded(
        topics: Settings, pool: asyncpg.Pool) -> None:
    answers = iter([(503, {}), (503, {"Retry-After": "0"}), (200, {})])
    async with http_sink(lambda r: next(answers)) as sink:
        settings = with_(topics, sms_gateway_url=sink.url + "/sms")
        await apply_events(pool, settings, [
            issued("CA-ON/SMS1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), owner(4, email=False, phone=True)),
            event("plate.renewed", "CA-ON/SMS1", NOW - dt.timedelta(minutes=1),
                  {"expires_on": (NOW.date() + dt.timedelta(days=700)).isoformat()})], NOW)
        async with notices_running(settings):
            await wait_until(lambda: [r for r in sink.requests] and
                             outcome_of(pool, "renewed", "sms"), what="sms")
            rows = await wait_until(
                lambda: _if_len(outcome_of(pool, "renewed", "sms"), 3), what="3 attempts")
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in rows] == [
        (1, "retry", 503), (2, "retry", 503), (3, "sent", 200)]
    notice_id = rows[0]["notice_id"]
    assert {r.headers["idempotency-key"] for r in sink.requests} == {f"{notice_id}:sms"}
    assert len(sink.requests) == 3
    assert orjson.loads(sink.requests[0].body)["to"] == "+155501004"


async def _if_len(rows_coro: object, n: int) -> list | None:
    rows = await rows_coro  # type: ignore[misc]
    return rows if len(rows) >= n else None


async def test_a_400_fails_at_once_and_falls_back_down_to_paper(
        topics: Settings, pool: asyncpg.Pool, tmp_path: Path, pdftotext: str) -> None:
    async with http_sink(lambda r: (400, {})) as sink:
        settings = with_(topics, sms_gateway_url=sink.url + "/sms")
        o = owner(5, email=False, phone=True, address=True, language="fr") | {
            "name": "Zoé Tremblay"}
        await apply_events(pool, settings, [
            issued("CA-QC/PAP1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), o),
            event("plate.cancelled", "CA-QC/PAP1", NOW - dt.timedelta(minutes=1),
                  {"reason": "destroyed"})], NOW)
        async with notices_running(settings):
            await wait_until(lambda: pool.fetchval(
                "SELECT 1 FROM notice_dispatch WHERE channel = 'paper' AND state = 'print'"),
                what="paper queued")
        assert len(sink.requests) == 1                    # no retry of a 400
    notice_id = await pool.fetchval("SELECT notice_id FROM notices")
    assert [r[1:] for r in await deliveries(pool, notice_id)] == [("sms", 1, "failed", 400)]
    day = today_in(settings.tz, dt.datetime.now(dt.UTC))
    out = tmp_path / "letters.pdf"
    cmd = [sys.executable, "-m", "wiring.cli", "notices", "paper", "--date", day.isoformat(),
           "--out", str(out)]
    done = subprocess.run(cmd, env=os.environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 letter(s)" in done.stdout
    text = subprocess.run([pdftotext, "-layout", str(out), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "Zoé Tremblay" in text and "5 Main Street" in text and "K1A 0A1" in text
    assert "annulée" in text and "la plaque a été détruite" in text
    assert (await deliveries(pool, notice_id))[-1][1:] == ("paper", 1, "sent", None)
    again = subprocess.run(cmd, env=os.environ, capture_output=True, text=True, timeout=60)
    assert "no letters" in again.stdout                    # printed once


async def test_a_hanging_receiver_times_out_is_retried_and_blocks_no_one(
        topics: Settings, pool: asyncpg.Pool) -> None:
    hung: list[Request] = []

    def display(r: Request) -> tuple[int, dict] | None:
        if not hung:
            hung.append(r)
            return None                                   # the first request hangs
        return (200, {})

    async with http_sink(display) as dev, http_sink() as sms:
        settings = with_(topics, plate_display_url=dev.url, sms_gateway_url=sms.url)
        await apply_events(pool, settings, [
            issued("CA-ON/DEV1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), owner(6, email=False), device_id="dev-6"),
            issued("CA-ON/OTH1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), owner(7, email=False, phone=True)),
            event("plate.recovered", "CA-ON/DEV1", NOW - dt.timedelta(minutes=1), {},
                  source="/police/opp/"),
            event("plate.recovered", "CA-ON/OTH1", NOW - dt.timedelta(minutes=1), {},
                  source="/police/opp/")], NOW)
        async with notices_running(settings):
            rows = await wait_until(lambda: _if_len(
                outcome_of(pool, "recovered", "plate_display"), 2), what="display retried")
        sms_sent = await outcome_of(pool, "recovered", "sms")
    assert [(r["outcome"], r["error"]) for r in rows] == [("retry", "timeout: ReadTimeout"),
                                                          ("sent", None)]
    assert sms_sent[0]["outcome"] == "sent" and sms_sent[0]["id"] < rows[0]["id"]
    assert orjson.loads(dev.requests[-1].body) == {"device_id": "dev-6",
                                                   "message": orjson.loads(
                                                       dev.requests[0].body)["message"]}


async def test_dispatcher_sigkilled_mid_delivery_loses_nothing(
        topics: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    hang_first = 3

    def answer(r: Request) -> tuple[int, dict] | None:
        return None if len(sink.requests) <= hang_first else (200, {})

    async with http_sink(answer) as sink:
        monkeypatch.setenv("PLATEREG_SMS_GATEWAY_URL", sink.url)
        monkeypatch.setenv("PLATEREG_NOTICE_HTTP_TIMEOUT_SECONDS", "1")
        monkeypatch.setenv("PLATEREG_NOTICE_RETRY_INITIAL_SECONDS", "0.05")
        monkeypatch.setenv("PLATEREG_NOTICE_CONCURRENCY", "4")
        n = 12
        events = []
        for i in range(n):
            subject = f"CA-ON/KIL{i}"
            events += [issued(subject, NOW.date() + dt.timedelta(days=300),
                              NOW - dt.timedelta(hours=1), owner(100 + i, email=False,
                                                                  phone=True)),
                       event("plate.reinstated", subject, NOW - dt.timedelta(minutes=1), {})]
        await apply_events(pool, topics, events, NOW)
        stop = asyncio.Event()
        relay = asyncio.create_task(run_notices_relay(topics, stop, idle=0.05))
        log = tmp_path / "dispatch.log"
        cmd = [sys.executable, "-m", "wiring.cli", "notices", "dispatch", "--metrics-port", "0"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, env=os.environ, stdout=out, stderr=subprocess.STDOUT)
            try:
                await wait_until(lambda: len(sink.requests) >= hang_first, timeout=60,
                                 what="deliveries in flight")
                proc.send_signal(signal.SIGKILL)          # mid-delivery: requests unanswered
                proc.wait(10)
                proc = subprocess.Popen(cmd, env=os.environ, stdout=out,
                                        stderr=subprocess.STDOUT)
                await wait_until(lambda: pool.fetchval(
                    "SELECT count(DISTINCT notice_id) = $1 FROM notice_deliveries "
                    "WHERE outcome = 'sent'", n), timeout=90, what="every notice sent")
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(20)
                stop.set()
                await relay
    ids = {str(r[0]) for r in await pool.fetch("SELECT notice_id FROM notices")}
    keys = [r.headers["idempotency-key"] for r in sink.requests]
    assert {k.removesuffix(":sms") for k in keys} == ids and all(k.endswith(":sms") for k in keys)
    assert len(keys) > n                                   # the unanswered ones came again
    sent = await pool.fetch("SELECT notice_id FROM notice_deliveries WHERE outcome = 'sent'")
    assert len(sent) == n                                  # one success each


async def test_an_intake_batch_that_could_not_be_recorded_is_read_again(
        topics: Settings, pool: asyncpg.Pool) -> None:
    async with http_sink() as sink:
        settings = with_(topics, sms_gateway_url=sink.url)
        await apply_events(pool, settings, [
            issued("CA-ON/INT1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), owner(9, email=False, phone=True)),
            event("plate.reinstated", "CA-ON/INT1", NOW - dt.timedelta(minutes=1), {})], NOW)
        # Recording the delivery fails (the table is away) while the notice is read.
        await pool.execute("ALTER TABLE notice_dispatch RENAME TO notice_dispatch_away")
        renamed = True
        try:
            async with notices_running(settings) as dispatcher:
                await wait_until(lambda: dispatcher.intake_failures > 0, timeout=60,
                                 what="an intake batch failing")
                await pool.execute("ALTER TABLE notice_dispatch_away RENAME TO notice_dispatch")
                renamed = False
                rows = await wait_until(lambda: outcome_of(pool, "reinstated", "sms"),
                                        timeout=60, what="the notice delivered")
        finally:
            if renamed:
                await pool.execute(
                    "ALTER TABLE notice_dispatch_away RENAME TO notice_dispatch")
    assert [r["outcome"] for r in rows] == ["sent"] and len(sink.requests) == 1


async def test_a_notice_received_again_after_it_was_sent_is_not_sent_again(
        topics: Settings, pool: asyncpg.Pool) -> None:
    """plates.notices is read at least once (a relay repeats a message whose ack it lost,
    a dispatcher re-reads a batch it had not committed): the same notice arriving after
    its delivery was sent must change nothing (contract: each notice sent once per
    channel). Once the dispatcher's group has committed past the repeat, its intake has
    recorded it: the delivery is still the one sent, nothing queued, nothing sent."""
    from aiokafka import TopicPartition

    from notifications.dispatcher import dispatcher_group
    from platereg.kafka import make_admin
    from tests.integration.consumer_support import produce
    from tests.integration.kafka_support import read_topic

    async with http_sink() as sink:
        settings = with_(topics, sms_gateway_url=sink.url + "/sms")
        await apply_events(pool, settings, [
            issued("CA-ON/AGN1", NOW.date() + dt.timedelta(days=300),
                   NOW - dt.timedelta(hours=1), owner(11, email=False, phone=True)),
            event("plate.reinstated", "CA-ON/AGN1", NOW - dt.timedelta(minutes=1), {})], NOW)
        async with notices_running(settings):
            [sent] = await wait_until(lambda: outcome_of(pool, "reinstated", "sms"),
                                      what="the notice sent")
            assert sent["outcome"] == "sent" and len(sink.requests) == 1
            notices_topic = settings.topic(contract.NOTICES)
            [message] = await read_topic(settings, notices_topic, at_least=1)
            ends = await produce(settings, [(message.key, message.value)], topic=notices_topic)
            admin = make_admin(settings)
            await admin.start()
            try:
                async def committed_past_it() -> bool:
                    offsets = await admin.list_consumer_group_offsets(dispatcher_group(settings))
                    return all((m := offsets.get(TopicPartition(notices_topic, p))) is not None
                               and m.offset >= end for p, end in ends.items())

                await wait_until(committed_past_it, what="the repeat read and committed")
            finally:
                await admin.close()
            dispatch = await pool.fetch("SELECT channel, state, attempts FROM notice_dispatch")
            attempts = await outcome_of(pool, "reinstated", "sms")
    assert [tuple(r) for r in dispatch] == [("sms", "sent", 1)]
    assert [(r["attempt"], r["outcome"]) for r in attempts] == [(1, "sent")]
    assert len(sink.requests) == 1
