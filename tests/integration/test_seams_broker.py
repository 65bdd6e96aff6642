"""The broker replaced under a running consumer, and ``platereg run`` with its demo load.

A broker replaced without its data (a new cluster on the same address, or
``make run``'s memory-only fallback broker restarted) starts every topic and
every log again from offset 0, far behind the offsets the registry has stored.
A consumer left running must reconnect, notice that its stored offsets are past
the new log ends, start from the new beginnings and apply the new events (with
the relay publishing the new status changes), with nothing applied twice.

``platereg run`` is run on Apache Kafka and, with no usable JDK, on the
embedded Tansu broker: the smoke test of that fallback path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from devtools.embedded import free_port
from platereg.kafka import ensure_topics
from schemas import topics as contract
from tests.integration.consumer_support import (
    encoded,
    produce,
    random_events,
    reference_fold,
    start_consumer_process,
    stop_process,
    stored_plates,
    wait_offsets,
)
from tests.integration.kafka_support import read_topic
from tests.integration.owner_support import form_fields
from tests.integration.seam_support import (
    log_text,
    metric,
    ops_port,
    parse_metrics,
    scrape,
    wait_for,
    wait_relayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_running_consumer_recovers_from_a_broker_restart(
        embedded, topics, pool: asyncpg.Pool, tmp_path) -> None:
    rng = random.Random(41)
    keys = [f"CA-PE/B{i:03d}" for i in range(80)]
    before = random_events(rng, keys, 600)
    # after the restart: later events for the same plates (and new plates)
    after = random_events(rng, keys + [f"CA-PE/N{i:02d}" for i in range(20)], 400)
    for ev in after:
        ev["time"] = (dt.datetime.fromisoformat(ev["time"].replace("Z", "+00:00"))
                      + dt.timedelta(days=40)).isoformat().replace("+00:00", "Z")
    log = str(tmp_path / "consumer.log")
    proc = start_consumer_process(topics, log_path=log)
    try:
        port = await ops_port(log)
        ends = await produce(topics, encoded(before))
        await wait_offsets(pool, topics, ends, proc=proc)
        await wait_relayed(pool, topics)
        seq_before = await pool.fetchval("SELECT max(seq) FROM status_changes")
        embedded.kafka.wipe()          # a new broker on the same port: nothing kept
        await ensure_topics(topics)    # what deployment does for a new broker
        new_ends = await produce(topics, encoded(after))
        assert all(new_ends[p] < ends.get(p, 0) for p in new_ends), \
            "the new logs should be shorter than the stored offsets"
        await wait_offsets(pool, topics, new_ends, timeout=120, proc=proc)
        await wait_relayed(pool, topics)

        async def caught_up() -> bool:
            samples = await scrape(port)
            return all(metric(samples, "platereg_consumer_lag", partition=str(p)) == 0
                       for p in range(topics.events_partitions))

        await wait_for(caught_up, "the lag to read 0 on the new logs")
        messages = await read_topic(topics, topics.topic(contract.STATUS))
        rows = await pool.fetch("SELECT plate_key FROM status_changes WHERE seq > $1", seq_before)
    finally:
        assert stop_process(proc) == 0
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == len(before) + len(after)
    assert await stored_plates(pool) == reference_fold(before + after)
    assert sorted(m.key.decode() for m in messages) == sorted(r["plate_key"] for r in rows)
    assert "past the log end" in log_text(log)


# --------------------------------------------------------------------------- make run

def _run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEREG_")}
    env.update(PLATEREG_DATA_DIR=str(tmp_path / "data"),
               PLATEREG_REGISTRY_PORT=str(free_port()), PLATEREG_INGEST_PORT=str(free_port()),
               PLATEREG_CONSUMER_METRICS_PORT=str(free_port()),
               PLATEREG_NOTICES_SCHEDULER_PORT=str(free_port()),
               PLATEREG_NOTICES_DISPATCHER_PORT=str(free_port()),
               PLATEREG_SMTP_PORT=str(free_port()))
    return env


def _without_a_jdk(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` where the only `java` is a Java 11: `make run` must fall back to Tansu."""
    fake = tmp_path / "old-jdk"
    fake.mkdir()
    (fake / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    (fake / "java").chmod(0o755)
    env = {k: v for k, v in env.items() if k != "JAVA_HOME"}
    return {**env, "PATH": f"{fake}:{env.get('PATH', '')}"}


@pytest.mark.parametrize("broker", ["apache-kafka", "tansu"])
async def test_platereg_run_demo_load_reaches_the_api(tmp_path, broker: str) -> None:
    """`platereg run` as `make run` starts it (demo data on): the demo plates come through
    the consumer and answer through the registry API with the printed key; on Apache Kafka
    where a JDK 17+ is found, else on the embedded Tansu broker (the smoke test of that
    fallback), the banner saying which and why."""
    env = _run_env(tmp_path)
    if broker == "tansu":
        env = _without_a_jdk(tmp_path, env)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wiring.cli", "run"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await wait_for(lambda: _ready(proc, log_path), "the banner of platereg run", 180, 0.3)
        text = log_path.read_text()
        if broker == "tansu":
            assert "embedded Tansu, memory only, because Apache Kafka needs a JDK 17+" in text
        else:
            assert re.search(r"^Apache Kafka 4\.\S+ \(KRaft\), data in ", text, re.MULTILINE)
        key = re.search(r"Demo operator API key \(shown once[^)]*\):\s+(\S+)", text).group(1)
        # the curl commands of `platereg demo`, which work verbatim
        demo = (tmp_path / "data" / "demo.txt").read_text()
        sample = re.search(r"-d '(\{.*\})' \S+/v1/plates/query", demo).group(1)
        assert key in demo
        base = re.search(r"registry-api +(http://[0-9.:]+)/docs", text).group(1)
        metrics_url = re.search(r"registry-consumer +(http://\S+/metrics)", text).group(1)
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as client:
            r = await client.post("/v1/plates/query", content=sample,
                                  headers={"Content-Type": "application/json"})
            assert r.status_code == 200 and r.json()["owner"] is not None

            async def loaded() -> dict | None:      # the whole demo load applied
                async with httpx.AsyncClient() as plain:
                    samples = parse_metrics((await plain.get(metrics_url)).text)
                lag = [v for (name, _), v in samples.items() if name == "platereg_consumer_lag"]
                applied = metric(samples, "platereg_events_total", outcome="applied")
                return samples if applied > 1000 and lag and not any(lag) else None

            samples = await wait_for(loaded, "the demo load to be applied", 120, 0.5)
            # the demo load carries a few invalid events: rejected, counted, dead-lettered
            rejected = metric(samples, "platereg_events_total", outcome="rejected")
            assert rejected > 0 and metric(samples, "platereg_dlq_total") == rejected
            await _owner_link_signs_in(text, base)
            hot = (await client.get("/v1/hotlist", params={"limit": 200, "purpose": "testing"})
                   ).json()["entries"]
            assert hot, "a year of simulated life leaves no plate flagged"
            refs = [{"jurisdiction": e["jurisdiction"], "plate": e["plate"]} for e in hot]
            r = await client.post("/v1/plates/lookup", json={"plates": refs,
                                                             "purpose": "testing"})
            assert [v["status"] for v in r.json()["results"]] == [e["status"] for e in hot]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 60) == 0


async def _owner_link_signs_in(banner: str, base: str) -> None:
    """The banner's demo owner link opens that owner's page, once."""
    link = re.search(r"one-time sign-in link, 14 days\):\s+(\S+)", banner).group(1)
    assert link.startswith(f"{base}/owner/?token=")
    async with httpx.AsyncClient() as browser:
        r = await browser.get(link)  # opening the link: a page with one button
        assert r.status_code == 200 and "platereg_owner=" not in r.headers["set-cookie"]
        r = await browser.post(f"{base}/owner/sign-in", data=form_fields(r.text))
        assert r.status_code == 303 and "platereg_owner" in r.headers["set-cookie"]
        page = await browser.get(f"{base}/owner/")
        assert page.status_code == 200, page.text[:500]
        assert "Your owner page" in page.text or "Votre page de propri" in page.text
        assert (await browser.get(link)).status_code == 410


async def _ready(proc: subprocess.Popen, log_path: Path) -> bool:
    assert proc.poll() is None, log_path.read_text()[-4000:]
    return "Press Ctrl-C" in log_path.read_text()


