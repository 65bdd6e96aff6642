"""The whole system under faults, on a three-broker Apache Kafka cluster: nothing lost,
nothing doubled.

Every process runs as its own OS process (registry consumer without relays, the
relays, both APIs, the notices scheduler and dispatcher). The broker is a cluster of
three combined KRaft nodes started for this module (replication factor 3,
``min.insync.replicas=2``; producers acks=all and idempotent). ``platereg simulate``
drives a simulated week of traffic, late, duplicate and invalid events included,
through Kafka and, with another seed, through the ingest API. The scheduler's clock
moves across the week (PLATEREG_CLOCK_OFFSET_SECONDS, one day per incarnation).
Meanwhile:

* a process is SIGKILLed and restarted every few seconds, in an order drawn from the
  seed alone (rounds of every process kind, so the first two rounds kill each kind
  twice) by a generator of its own: neither the traffic nor the reader shares it,
  so no timing changes who dies;
* the leader of the busiest partition of plates.events is SIGKILLed mid-stream and
  started again on its log;
* the leader of the busiest partition is frozen (SIGSTOP) until the controller has
  fenced it and moved its leaderships, then resumed: unlike a crash, its clients'
  requests hang instead of failing, and it wakes up a stale leader that has to find
  out and follow;
* all three brokers are restarted one after another (controlled shutdown), each
  back with no under-replicated partition before the next goes;
* PostgreSQL is restarted once.

One broker fault at a time: two nodes of three are always up, so the controller
quorum and ``min.insync.replicas`` hold and no producer has to give up. Partition
leadership is watched through the admin API throughout (the failovers seen are in
the figures).

At the end the invariants are checked against an independent reference (the
generator's items and the reference fold of tests/integration/consumer_support.py).
The report names the seed and the kills in the order made. ``make soak`` runs the
same for longer (E2E_* variables) and writes the report and a plot of throughput and
lag (E2E_REPORT_DIR).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiosmtpd.controller import Controller

from devtools import simulate as sim
from devtools.apache_kafka import KafkaCluster
from devtools.embedded import free_port
from notifications.dispatcher import dispatcher_group
from platereg.kafka import ensure_topics, make_admin, make_consumer
from platereg.security.keys import create_key
from platereg.settings import Settings, load_settings
from schemas import topics as contract
from tests.integration.consumer_support import reference_fold, stored_plates, wait_offsets
from tests.integration.e2e_support import (
    ClusterWatch,
    Figures,
    Proc,
    env_float,
    env_int,
    kill_schedule,
    plot,
    sample_timeline,
)
from tests.integration.kafka_support import read_topic
from tests.integration.notices_support import MailCatcher, http_sink
from tests.integration.seam_support import (
    as_published,
    expected_view,
    metric,
    scrape,
    wait_for,
    wait_relayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]

SHARES = {"late_share": 0.03, "duplicate_share": 0.02, "invalid_share": 0.02}
REMINDER_DAYS = (60, 30, 7)
#: The channels the test's sinks receive (paper goes to the print queue).
SINK_CHANNELS = ("email", "sms", "plate_display")
#: How long after its dispatcher was SIGKILLed a request the dead process had written may
#: still be read by a sink (the sinks run on this test's busy event loop).
IN_FLIGHT_SLACK = 2.0
NOTICE_HTTP_TIMEOUT = 3.0
#: A delivery claimed by a dispatcher that dies is claimed again when its lease ends
#: (twice the HTTP timeout plus 5 s after the claim), so a copy sent by the next
#: incarnation arrives at least the lease minus the longest attempt (twice the timeout)
#: after the first.
MIN_RESEND_GAP = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three combined KRaft nodes: three replicas of every topic, two in sync to accept a
    write (so one node may be down or frozen at a time). Their JVMs compile with C1 only:
    a node restarts on half the CPU, which the busy test is short of."""
    nodes = KafkaCluster(tmp_path_factory.mktemp("cluster"), nodes=3, config={
        "default.replication.factor": "3", "min.insync.replicas": "2"},
        jvm_options=("-XX:TieredStopAtLevel=1",))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def on_cluster(settings: Settings, cluster: KafkaCluster,
                     monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's settings on the cluster (exported for the processes too), its topics
    created with three replicas."""
    monkeypatch.setenv("PLATEREG_KAFKA_BOOTSTRAP_SERVERS", cluster.bootstrap)
    monkeypatch.setenv("PLATEREG_REPLICATION_FACTOR", "3")
    moved = load_settings()
    await ensure_topics(moved)
    return moved


def _streams(seed: int, start: dt.datetime) -> dict[str, sim.SimConfig]:
    week = dt.timedelta(days=7)
    return {"kafka": sim.SimConfig(plates=env_int("E2E_PLATES_KAFKA", 1500), start=start,
                                   duration=week, seed=seed, **SHARES),
            "api": sim.SimConfig(plates=env_int("E2E_PLATES_API", 600), start=start,
                                 duration=week, seed=seed + 1, **SHARES)}


def _simulate_argv(config: sim.SimConfig, to: str, rate: float, api: str | None) -> list[str]:
    argv = [sys.executable, "-m", "wiring.cli", "simulate", "--to", to,
            "--plates", str(config.plates), "--duration", "7d",
            "--start", config.start.isoformat(), "--seed", str(config.seed),
            "--rate", str(rate), "--no-progress",
            *(f"--{k.replace('_', '-')}={v}" for k, v in SHARES.items())]
    return argv + (["--api", api] if api else [])


def _processes(tmp: Path, env: dict[str, str], ingest_port: int, registry_port: int,
               day: list[int]) -> dict[str, Proc]:
    def clock(_incarnation: int) -> dict[str, str]:
        # the scheduler's "now" walks across the simulated week, one day per incarnation
        return {"PLATEREG_CLOCK_OFFSET_SECONDS": str(-86400 * (7 - min(day[0], 7)))}

    def proc(name: str, *argv: str, env_for=None) -> Proc:  # noqa: ANN001
        return Proc(name, argv, tmp / f"{name}.log", env, env_for)

    return {p.name: p for p in (
        proc("consumer", "consume", "registry", "--no-relays", "--metrics-port", "{port}",
             "--max-records", "500"),
        proc("relay", "consume", "relay", "--metrics-port", "{port}"),
        proc("ingest-api", "serve", "ingest", "--port", str(ingest_port)),
        proc("registry-api", "serve", "registry", "--port", str(registry_port)),
        proc("scheduler", "notices", "schedule", "--metrics-port", "{port}", "--every", "0.5",
             env_for=clock),
        proc("dispatcher", "notices", "dispatch", "--metrics-port", "{port}"))}


async def _committed(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets")


class Run:
    """One end-to-end run: processes, sinks, traffic, faults, reads and figures."""

    def __init__(self, settings, pool, embedded, cluster: KafkaCluster,  # noqa: ANN001
                 tmp: Path, seed: int) -> None:
        self.settings, self.pool, self.embedded, self.tmp = settings, pool, embedded, tmp
        self.cluster = cluster
        self.seed, self.rng = seed, random.Random(seed)     # the reader's choices
        self.figures = Figures(seed=seed)
        self.started = time.monotonic()
        self.traffic_at = self.started                     # set when the traffic starts
        self.watch = ClusterWatch(settings, settings.topic(contract.EVENTS), self.started)
        self.day = [0]
        self.reads: Counter[str] = Counter()        # key id -> audited answers (200/404)
        #: each read's own case_ref: those sent, and those answered 200/404 (audited)
        self.sent_refs: set[str] = set()
        self.answered_refs: set[str] = set()
        self.read_keys: dict[int, tuple[str, str]] = {}
        self.consumer_resumed_at = 0
        self.exits: list[str] = []

    def note(self, what: str) -> None:
        self.figures.faults.append((time.monotonic() - self.started, what))

    def since_traffic(self) -> float:
        return time.monotonic() - self.traffic_at

    async def until(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the traffic started."""
        await asyncio.sleep(max(0.0, seconds - self.since_traffic()))

    async def restart(self, proc: Proc, *, kill: bool = True, day: bool = False) -> None:
        """SIGKILL ``proc`` (a kill of the schedule, or the scheduler's day move) and start
        it again; ``kill=False`` starts one that exited."""
        if kill:
            proc.kill()
            if day:
                self.figures.day_moves += 1
            else:
                self.figures.kills[proc.name] = self.figures.kills.get(proc.name, 0) + 1
                self.figures.schedule.append((time.monotonic() - self.started, proc.name))
            self.note(f"kill {proc.name}")
        if proc.name == "consumer":     # the next incarnation counts from here
            self.consumer_resumed_at = await self._committed_retrying()
        proc.start()

    async def _committed_retrying(self) -> int:
        async def value() -> int | None:
            try:
                return await _committed(self.pool) + 1   # +1: 0 committed is an answer too
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return None
        return await wait_for(value, "the committed offsets", timeout=60, every=0.2) - 1

    async def revive(self, procs: dict[str, Proc]) -> None:
        """Restart a process that exited by itself (noted: none should)."""
        for proc in procs.values():
            if not proc.alive():
                self.exits.append(f"{proc.name} exited {proc.popen.returncode}")
                await self.restart(proc, kill=False)

    async def reader(self, port: int, plates: list[str], stop: asyncio.Event) -> None:
        """Single lookups with a fresh operator key per registry API incarnation."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            while not stop.is_set():
                await self.read_once(c, self.rng.choice(plates), self.procs["registry-api"])
                await asyncio.sleep(0.05)

    async def read_once(self, c: httpx.AsyncClient, key: str, api: Proc) -> None:
        if api.incarnation not in self.read_keys:
            try:
                self.read_keys[api.incarnation] = await create_key(
                    self.pool, role="operator", name=f"e2e reads {api.incarnation}")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return
        key_id, secret = self.read_keys[api.incarnation]
        j, p = key.split("/")
        ref = f"e2e-{len(self.sent_refs)}"
        self.sent_refs.add(ref)
        body = {"jurisdiction": j, "plate": p, "purpose": "testing", "case_ref": ref}
        try:
            r = await c.post("/v1/plates/query", json=body,
                             headers={"Authorization": f"Bearer {secret}"})
            while r.status_code == 429:     # rate limited (units): as a client would, wait
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                r = await c.post("/v1/plates/query", json=body,
                                 headers={"Authorization": f"Bearer {secret}"})
        except httpx.TransportError:
            return
        if r.status_code in (200, 404):
            self.reads[key_id] += 1
            self.answered_refs.add(ref)


def _reference(streams: dict[str, sim.SimConfig]) -> dict[str, list[sim.Item]]:
    return {name: list(sim.generate(config)) for name, config in streams.items()}


@pytest.mark.timeout(600 + 4 * env_float("E2E_TRAFFIC_SECONDS", 60))
async def test_whole_system_under_faults_loses_and_doubles_nothing(
        embedded, on_cluster: Settings, cluster: KafkaCluster, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    seed = env_int("E2E_SEED", 20261125)
    run = Run(on_cluster, pool, embedded, cluster, tmp_path, seed)
    tz = ZoneInfo(on_cluster.timezone)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    streams = _streams(seed, start)
    items = _reference(streams)
    run.figures.events_sent = sum(len(its) for its in items.values())
    run.figures.invalid_events = sum(i.kind == sim.INVALID for its in items.values() for i in its)
    run.figures.valid_events = sum(i.kind == sim.VALID for its in items.values() for i in its)
    catcher = MailCatcher()
    smtp = Controller(catcher, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        async with http_sink() as sms, http_sink() as display:
            await _run(run, streams, items, (catcher, smtp.port), sms, display, tz)
    finally:
        smtp.stop()
        run.figures.leader_changes = list(run.watch.changes)
        print(f"\n{run.figures.report()}")
        report = os.environ.get("E2E_REPORT_DIR")
        if report:
            Path(report).mkdir(parents=True, exist_ok=True)
            (Path(report) / "figures.txt").write_text(run.figures.report() + "\n")
            plot(run.figures, Path(report) / "throughput_lag.png")
            print(f"figures and plot in {report}")


async def _run(run: Run, streams, items, mail, sms, display, tz) -> None:  # noqa: ANN001
    catcher, smtp_port = mail
    pool = run.pool
    ingest_port, registry_port = free_port(), free_port()
    env = {**os.environ, "PLATEREG_LOG_LEVEL": "INFO", "PLATEREG_LOG_FORMAT": "json",
           "PLATEREG_SMTP_PORT": str(smtp_port),
           "PLATEREG_SMS_GATEWAY_URL": sms.url + "/sms",
           "PLATEREG_PLATE_DISPLAY_URL": display.url + "/display",
           "PLATEREG_NOTICE_RETRY_INITIAL_SECONDS": "0.2",
           "PLATEREG_NOTICE_RETRY_MAX_SECONDS": "2",
           "PLATEREG_NOTICE_HTTP_TIMEOUT_SECONDS": str(NOTICE_HTTP_TIMEOUT),
           "PLATEREG_RENEWAL_REMINDER_DAYS": ",".join(map(str, REMINDER_DAYS)),
           "PLATEREG_KAFKA_TIMEOUT_SECONDS": "30"}
    procs = _processes(run.tmp, env, ingest_port, registry_port, run.day)
    run.procs = procs
    # bound to every kind of source the simulator uses: its smart plate thefts stay refused
    ingest_key = (await create_key(pool, role="ingest", name="e2e simulate", sources=[
        "/registry/", "/insurance/", "/courts/", "/emissions/", "/police/"]))[1]
    for proc in procs.values():
        proc.start()
    traffic: list[subprocess.Popen] = []
    stop = asyncio.Event()
    background: list[asyncio.Task] = []
    try:
        await _wait_up(procs, ingest_port, registry_port)
        seconds = env_float("E2E_TRAFFIC_SECONDS", 60)
        run.traffic_at = time.monotonic()
        for name, config in streams.items():
            rate = max(len(items[name]) / seconds, 1.0)
            api = f"http://127.0.0.1:{ingest_port}" if name == "api" else None
            with open(run.tmp / f"simulate-{name}.log", "ab") as log:
                traffic.append(subprocess.Popen(
                    _simulate_argv(config, name, rate, api), stdout=log,
                    stderr=subprocess.STDOUT, env={**env, "PLATEREG_API_KEY": ingest_key}))
        plates = sorted({i.key.decode() for its in items.values() for i in its
                         if i.kind == sim.VALID})
        background = [asyncio.create_task(run.reader(registry_port, plates, stop)),
                      asyncio.create_task(sample_timeline(pool, run.figures, run.started, stop,
                                                          lambda: _lag(procs["consumer"]))),
                      asyncio.create_task(run.watch.run(stop))]
        await _faults(run, procs, traffic, seconds)
        for t in traffic:
            assert await asyncio.to_thread(t.wait, 300) == 0, t.args
        await _settle(run, procs)
        await _replay_notices(run, procs["dispatcher"])
        stop.set()
        await asyncio.gather(*background)
        await _check(run, procs, items, catcher, sms, display, tz, registry_port)
    finally:
        stop.set()
        for t in traffic:
            if t.poll() is None:
                t.kill()
                t.wait()
        for proc in procs.values():
            proc.stop()


async def _wait_up(procs: dict[str, Proc], ingest_port: int, registry_port: int) -> None:
    async def up() -> bool:
        for proc in procs.values():
            assert proc.alive(), proc.tail()
        urls = [f"http://127.0.0.1:{p}/healthz" for p in (ingest_port, registry_port)] + [
            f"http://127.0.0.1:{proc.port}/healthz" for proc in procs.values() if proc.port]
        try:
            async with httpx.AsyncClient(timeout=2) as c:
                return all([(await c.get(u)).status_code == 200 for u in urls])
        except httpx.TransportError:
            return False

    await wait_for(up, "every process to answer /healthz", timeout=90, every=0.2)


async def _lag(consumer: Proc) -> int:
    samples = await scrape(consumer.port)
    return int(metric(samples, "platereg_consumer_lag"))


async def _faults(run: Run, procs: dict[str, Proc], traffic: list[subprocess.Popen],
                  seconds: float) -> None:
    """The process faults here, the broker faults in a task beside them."""
    brokers = asyncio.create_task(_broker_faults(run, seconds))
    try:
        await _process_faults(run, procs, traffic, seconds, brokers)
    finally:
        if not brokers.done():
            brokers.cancel()
            await asyncio.gather(brokers, return_exceptions=True)


async def _process_faults(run: Run, procs: dict[str, Proc], traffic: list[subprocess.Popen],
                          seconds: float, brokers: asyncio.Task) -> None:
    """SIGKILL a process every few seconds, in the seed's order; restart PostgreSQL once;
    move the scheduler's clock one day per incarnation. Until the traffic has been sent,
    every broker fault made and every process kind killed twice."""
    kill_every = env_float("E2E_KILL_EVERY", 3.0)
    schedule = kill_schedule(run.seed, procs)
    required = 2 * len(procs)                   # two rounds of the schedule
    day_every = seconds / 8
    next_kill, next_day = kill_every, day_every
    pg_done = False
    while True:
        if brokers.done():
            brokers.result()                    # a broker fault that failed fails the run
        now = run.since_traffic()
        if (brokers.done() and pg_done and run.day[0] >= 7
                and len(run.figures.schedule) >= required
                and all(t.poll() is not None for t in traffic)):
            return
        await run.revive(procs)
        if now >= next_kill:
            await run.restart(procs[next(schedule)])
            next_kill = now + kill_every
        if now >= next_day and run.day[0] < 7:
            run.day[0] += 1                       # the scheduler's next incarnation: next day
            await run.restart(procs["scheduler"], day=True)
            next_day = now + day_every
        if now >= seconds * 0.45 and not pg_done:
            pg_done = True
            await _restart_postgres(run)
        await asyncio.sleep(0.2)


async def _restart_postgres(run: Run) -> None:
    run.note("PostgreSQL restart")
    await run.pool.expire_connections()
    pg = run.embedded.pg
    await asyncio.to_thread(pg.stop)
    await asyncio.to_thread(pg.start)
    await run.pool.expire_connections()
    run.figures.postgres_restarts += 1
    run.note("PostgreSQL up")


async def _broker_faults(run: Run, seconds: float) -> None:
    """One broker at a time, the cluster in sync again before the next fault."""
    await run.until(seconds * 0.1)
    await _kill_busy_leader(run)
    await run.until(seconds * 0.3)
    await _freeze_busy_leader(run, env_float("E2E_FREEZE_SECONDS", 6.0))
    await run.until(seconds * 0.45)
    await _rolling_restart(run)


async def _busy_leader(run: Run, *, wait: bool = True) -> tuple[int, int]:
    """The busiest partition of plates.events (records in the last second) and its leader;
    with ``wait``, once records flow (the traffic's processes may start slowly)."""
    async def busiest() -> tuple[int, int] | None:
        partition, grew = await run.watch.busiest()
        return (partition, grew) if grew > 0 or not wait else None

    partition, _ = await wait_for(busiest, "records on the events topic", timeout=60)
    return partition, (await run.watch.observe())[partition]


async def _kill_busy_leader(run: Run) -> None:
    """SIGKILL the leader of the busiest partition; once another broker leads it, start
    the dead one again on its log and wait until it is back in sync."""
    partition, leader = await _busy_leader(run)
    run.note(f"SIGKILL broker {leader}, leader of p{partition}")
    await asyncio.to_thread(run.cluster.kill_node, leader)
    run.figures.broker_kills += 1
    now_led_by = await run.watch.wait_leader_moved(partition, leader)
    run.note(f"p{partition} failed over to broker {now_led_by}")
    await asyncio.to_thread(run.cluster.start_node, leader)
    await run.watch.wait_in_sync()
    run.note(f"broker {leader} back on its log, in sync")


async def _freeze_busy_leader(run: Run, seconds: float) -> None:
    """SIGSTOP the busiest partition's leader for at least ``seconds`` and until another
    broker leads that partition (the controller fences a broker silent for its session,
    6 s, longer when the frozen node was the active controller), then SIGCONT; wait until
    it follows and is in sync again."""
    partition, leader = await _busy_leader(run, wait=False)
    pid = run.cluster.nodes[leader - 1].proc.pid
    run.note(f"broker {leader} frozen, leader of p{partition}")
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
        now_led_by = await run.watch.wait_leader_moved(partition, leader, timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    run.figures.broker_freezes += 1
    run.note(f"broker {leader} resumed, p{partition} led by broker {now_led_by}")
    await run.watch.wait_in_sync()
    run.note(f"broker {leader} in sync")


async def _rolling_restart(run: Run) -> None:
    """Every broker in turn: controlled shutdown (SIGTERM), started again, and no
    under-replicated partition before the next one goes."""
    for node in run.cluster.nodes:
        run.note(f"broker {node.node_id} controlled shutdown")
        await asyncio.to_thread(run.cluster.stop_node, node.node_id)
        await asyncio.to_thread(run.cluster.start_node, node.node_id)
        run.figures.broker_restarts += 1
        await run.watch.wait_in_sync()
        run.note(f"broker {node.node_id} back, in sync")


async def _settle(run: Run, procs: dict[str, Proc]) -> list:
    """After the faults: the last day for the scheduler, everything consumed, relayed,
    scheduled and delivered. Returns the events topic's records."""
    settings, pool = run.settings, run.pool
    run.day[0] = 7
    procs["scheduler"].stop()
    procs["scheduler"].start()
    await run.revive(procs)
    records = await read_topic(settings, settings.topic(contract.EVENTS), timeout=120)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    await wait_offsets(pool, settings, ends, timeout=240)
    caught_up = dt.datetime.now(dt.UTC)
    await wait_relayed(pool, settings, timeout=120)

    async def scheduled() -> bool:
        rechecks = await pool.fetchval("SELECT count(*) FROM notice_rechecks")
        runs = await pool.fetchval("SELECT count(*) FROM notice_scheduler_runs "
                                   "WHERE last_run_at > $1", caught_up)
        return rechecks == 0 and runs > 0

    await wait_for(scheduled, "a scheduler run after the consumer caught up", timeout=120)

    try:
        await wait_for(lambda: _delivered(pool), "every notice published and dispatched",
                       timeout=180)
    except AssertionError:
        lost = await pool.fetch(
            "SELECT seq, kind, published_at FROM notices n WHERE published_at IS NOT NULL AND "
            "NOT EXISTS (SELECT 1 FROM notice_dispatch d WHERE d.notice_id = n.notice_id)")
        run.figures.violations += [f"notice seq {r['seq']} ({r['kind']}) published at "
                                   f"{r['published_at']:%H:%M:%S.%f} never dispatched"
                                   for r in lost]
        raise
    run.records = records
    return records


async def _delivered(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval(
        "SELECT (SELECT count(*) FROM notices WHERE published_at IS NULL)"
        " + (SELECT count(*) FROM notices n WHERE NOT EXISTS (SELECT 1 FROM "
        "    notice_dispatch d WHERE d.notice_id = n.notice_id))"
        " + (SELECT count(*) FROM notice_dispatch WHERE state = 'pending')") == 0


async def _replay_notices(run: Run, dispatcher: Proc) -> None:
    """The dispatcher reads every notice again: its group's offsets moved back to the
    start while it is stopped (as when committed offsets expire, or an operator resets
    them). Nothing may be sent again (the deliveries check)."""
    settings = run.settings
    group = dispatcher_group(settings)
    tps = [TopicPartition(settings.topic(contract.NOTICES), p)
           for p in range(settings.notices_partitions)]
    assert dispatcher.stop() in (0, -signal.SIGTERM), dispatcher.tail()
    rewind = make_consumer(settings, group_id=group)
    await rewind.start()
    try:
        rewind.assign(tps)
        ends = await rewind.end_offsets(tps)
        await rewind.commit({tp: 0 for tp in tps})
    finally:
        await rewind.stop()
    run.note("dispatcher reads every notice again")
    dispatcher.start()
    admin = make_admin(settings)
    await admin.start()

    async def read_again() -> bool:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return all(committed[tp].offset == ends[tp] for tp in tps)

    try:
        await wait_for(read_again, "the dispatcher to read the notices again", timeout=60)
    finally:
        await admin.close()
    run.figures.notices_read_again = sum(ends.values())
    await wait_for(lambda: _delivered(run.pool), "deliveries after the replay", timeout=60)


async def _check(run: Run, procs, items, catcher, sms, display, tz,  # noqa: ANN001
                 registry_port: int) -> None:
    valid = await _applied_versions(run.pool, items)
    # every valid event applied exactly once, every plate equal to the reference fold
    ids = [(r["source"], r["event_id"]) for r in await run.pool.fetch(
        "SELECT source, event_id FROM plate_events")]
    assert len(ids) == len(set(ids)) == len({(e["source"], e["id"]) for e in valid}) == len(valid)
    assert set(ids) == {(e["source"], e["id"]) for e in valid}
    expected = reference_fold(valid)
    assert await stored_plates(run.pool) == expected
    await _check_dlq(run, items)
    today = dt.datetime.now(tz).date()
    views = {k: expected_view(k, s, today, False) for k, s in expected.items() if s["issued"]}
    await _check_status_and_hotlist(run, views, registry_port)
    await _check_notices(run, expected, catcher, sms, display, today)
    await _check_audit(run, procs, registry_port, sorted(views))
    await _check_consumer_metrics(run, procs["consumer"])
    assert not run.exits, f"processes exited by themselves: {run.exits}"
    spared = {name: run.figures.kills.get(name, 0) for name in procs
              if run.figures.kills.get(name, 0) < 2}
    assert not spared, f"process kinds killed fewer than twice: {spared}"


async def _applied_versions(pool: asyncpg.Pool, items) -> list[dict]:  # noqa: ANN001
    """The valid events (subjects canonical: the generator writes some in lower case).

    An ``id_conflict`` item is an event of the stream again, same (source, id), one second
    earlier. The registry keeps whichever arrives first: through the ingest API the
    simulator posts invalid items at once and valid ones in batches, so the copy may win.
    The stored time says which one did; the other must be in the DLQ (checked there)."""
    copies = {}
    for its in items.values():
        for i in its:
            if i.reason == "id_conflict":
                ev = {**orjson.loads(i.value), "subject": i.key.decode()}
                copies[(ev["source"], ev["id"])] = ev
    stored = {(r["source"], r["event_id"]): r["event_time"] for r in await pool.fetch(
        "SELECT source, event_id, event_time FROM plate_events")}
    out = []
    for its in items.values():
        for i in its:
            if i.kind != sim.VALID:
                continue
            ev = {**orjson.loads(i.value), "subject": i.key.decode()}
            copy = copies.get((ev["source"], ev["id"]))
            if copy is not None and stored.get((ev["source"], ev["id"])) == _instant(copy):
                ev = copy
            out.append(ev)
    return out


def _instant(ev: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(ev["time"].replace("Z", "+00:00"))


async def _check_dlq(run: Run, items) -> None:  # noqa: ANN001
    """Each invalid message on the events topic is in the DLQ once, with its reason."""
    on_topic = Counter(r.value for r in run.records)
    rows = await run.pool.fetch("SELECT value, reason FROM dlq_messages")
    conflicts = {(ev["source"], ev["id"]) for ev in (
        orjson.loads(i.value) for its in items.values() for i in its
        if i.reason == "id_conflict")}
    want: Counter = Counter()
    for name, its in items.items():
        for i in its:
            if i.kind != sim.INVALID or i.reason == "id_conflict":
                continue
            if name == "kafka":
                assert on_topic[i.value] >= 1, f"invalid message lost: {i.reason}"
            want[(i.value, i.reason)] += on_topic[i.value]   # the ingest API refuses these
    got = Counter((bytes(r["value"]), r["reason"]) for r in rows
                  if r["reason"] != "id_conflict")
    assert got == +want
    # a (source, id) reused with other content: whichever version came second is refused
    refused = {(ev["source"], ev["id"]) for ev in (
        orjson.loads(r["value"]) for r in rows if r["reason"] == "id_conflict")}
    assert refused == conflicts


async def _check_status_and_hotlist(run: Run, views: dict[str, dict], port: int) -> None:
    """The status feed ends at each plate's view; the hotlist is the flagged plates."""
    last: dict[str, dict] = {}
    for m in await read_topic(run.settings, run.settings.topic(contract.STATUS), timeout=120):
        last[m.key.decode()] = as_published(orjson.loads(m.value))
    assert last == {k: as_published(v) for k, v in views.items()}
    secret = (await create_key(run.pool, role="enforcement", name="e2e hotlist"))[1]
    entries: list[dict] = []
    since = None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        while True:
            params = {"limit": 1000, "purpose": "testing", **({"since": since} if since else {})}
            headers = {"Authorization": f"Bearer {secret}"}
            r = await c.get("/v1/hotlist", params=params, headers=headers)
            while r.status_code == 429:     # rate limited (units): as a client would, wait
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                r = await c.get("/v1/hotlist", params=params, headers=headers)
            assert r.status_code == 200, r.text
            page = r.json()
            entries += page["entries"]
            since = page["next"]
            if len(page["entries"]) < 1000:
                break
    flagged = {k: {**as_published(v), "removed": False} for k, v in views.items()
               if v["status"] != "valid"}
    assert {f"{e['jurisdiction']}/{e['plate']}": as_published(e) for e in entries} == flagged


def _nearest_window(expires: dt.date, today: dt.date) -> int | None:
    """From the contract: reminders N days before, expired (-1) the day after; the nearest
    open window."""
    open_ = [w for w in (*REMINDER_DAYS, -1) if today >= expires - dt.timedelta(days=w)]
    return min(open_) if open_ else None


async def _check_notices(run: Run, expected: dict, catcher, sms, display,  # noqa: ANN001
                         today: dt.date) -> None:
    pool = run.pool
    notices = await pool.fetch("SELECT notice_id, dedupe_key, plate_key, expires_on, "
                               "window_days FROM notices")
    run.figures.notices = len(notices)
    assert len({n["dedupe_key"] for n in notices}) == len(notices)
    windows = Counter((n["plate_key"], n["expires_on"], n["window_days"]) for n in notices
                      if n["window_days"] is not None)
    assert all(c == 1 for c in windows.values())
    # every window that opened within the scheduler's look-back has its notice
    span = max(REMINDER_DAYS) + 1
    due = set()
    for key, s in expected.items():
        if not s["issued"] or s["cancelled"] or not s["expires_on"] or not s["owner"]:
            continue
        expires = dt.date.fromisoformat(s["expires_on"])
        w = _nearest_window(expires, today)
        if w is not None and expires - dt.timedelta(days=w) > today - dt.timedelta(days=span):
            due.add((key, expires, w))
    missing = due - set(windows)
    assert not missing, f"{len(missing)} due notices missing, e.g. {sorted(missing)[:3]}"
    await _check_deliveries(run, catcher, sms, display)


def _receipts(run: Run, catcher, sms, display) -> dict[tuple[str, str], list[float]]:  # noqa: ANN001
    """(notice id, channel) -> when each request for it reached a sink (seconds into the
    run), from the SMTP catcher's Message-IDs and the HTTP sinks' Idempotency-Keys."""
    out: dict[tuple[str, str], list[float]] = {}
    for message, at in zip(catcher.messages, catcher.arrivals, strict=True):
        notice_id, channel = message["Message-ID"].strip("<>").split("@")[0].rsplit(".", 1)
        out.setdefault((notice_id, channel), []).append(at - run.started)
    for sink in (sms, display):
        for req in sink.requests:
            notice_id, channel = req.headers["idempotency-key"].rsplit(":", 1)
            out.setdefault((notice_id, channel), []).append(req.at - run.started)
    return {pair: sorted(times) for pair, times in out.items()}


async def _check_deliveries(run: Run, catcher, sms, display) -> None:  # noqa: ANN001
    """Exactly one sent delivery per notice and channel.

    In the database, one ``sent`` attempt for each delivery in state ``sent`` and none for
    any other. At the sinks, every such delivery received and nothing else; a request
    received again only after its dispatcher was SIGKILLed in between (the dead
    incarnation sent it and died before recording it; its lease brought it back, so not
    before MIN_RESEND_GAP) or after an attempt recorded as not sent (a timeout, say): what
    the Idempotency-Key is for. A dispatcher that sends twice, or a delivery sent again
    after it was recorded, fails here."""
    rows = await run.pool.fetch(
        "SELECT d.notice_id::text AS notice_id, d.channel, d.state,"
        " count(a.id) FILTER (WHERE a.outcome = 'sent') AS sent,"
        " count(a.id) FILTER (WHERE a.outcome <> 'sent') AS unsent"
        " FROM notice_dispatch d LEFT JOIN notice_deliveries a USING (notice_id, channel)"
        " GROUP BY 1, 2, 3")
    problems = [f"{r['channel']} delivery of {r['notice_id']} ({r['state']}) has "
                f"{r['sent']} sent attempts" for r in rows
                if r["sent"] != int(r["state"] == "sent")]
    sent = {(r["notice_id"], r["channel"]) for r in rows
            if r["state"] == "sent" and r["channel"] in SINK_CHANNELS}
    receipts = _receipts(run, catcher, sms, display)
    problems += [f"{c} delivery of {n} sent but never received" for n, c in sent - set(receipts)]
    problems += [f"{c} delivery of {n} received but not sent" for n, c in set(receipts) - sent]
    retried = {(r["notice_id"], r["channel"]) for r in rows if r["unsent"]}
    kills = [at for at, what in run.figures.faults if what == "kill dispatcher"]
    for (notice_id, channel), times in receipts.items():
        for a, b in itertools.pairwise(times):
            if b - a >= MIN_RESEND_GAP and any(a - IN_FLIGHT_SLACK <= k <= b for k in kills):
                run.figures.repeats_after_kill += 1
            elif (notice_id, channel) in retried:
                run.figures.repeats_after_retry += 1
            else:
                problems.append(f"{channel} delivery of {notice_id} received again {b - a:.2f}s "
                                "later, with no dispatcher kill or failed attempt between")
    run.figures.deliveries = sum(map(len, receipts.values()))
    run.figures.violations += problems
    assert not problems, f"{len(problems)} delivery problems, e.g. {problems[:5]}"


async def _check_audit(run: Run, procs: dict[str, Proc], port: int, plates: list[str]) -> None:
    """Every read answered (200/404) has exactly one audit row, SIGKILLed API incarnations
    included (a read is answered only once its row is committed); no read has two. Each
    read has its own case_ref. A read whose answer never arrived (the API killed after the
    row was committed, before the answer) may have its row: it was looked up. The last incarnation,
    with a fresh key, is stopped cleanly after 50 reads."""
    api = procs["registry-api"]
    run.read_keys[api.incarnation] = await create_key(run.pool, role="operator",
                                                      name="e2e reads, clean stop")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for key in plates[:50]:
            await run.read_once(c, key, api)
    last_key = run.read_keys[api.incarnation][0]
    assert run.reads[last_key] == min(50, len(plates))
    # uvicorn re-raises SIGTERM after its clean shutdown (one worker): -15 is a clean stop
    assert api.stop() in (0, -signal.SIGTERM), api.tail()
    rows = dict(await run.pool.fetch("SELECT case_ref, count(*) FROM audit_log "
                                     "WHERE case_ref LIKE 'e2e-%' AND kind = 'single' "
                                     "GROUP BY 1"))
    run.figures.reads = len(run.answered_refs)
    doubled = sorted(ref for ref, n in rows.items() if n > 1)
    lost = sorted(run.answered_refs - set(rows))
    if lost:
        run.figures.violations.append(f"{len(lost)} answered reads without an audit row")
    if doubled:
        run.figures.violations.append(f"{len(doubled)} reads with more than one audit row")
    assert not lost, f"answered reads without an audit row: {lost[:20]}"
    assert not doubled, f"reads with more than one audit row: {doubled[:20]}"
    assert set(rows) <= run.sent_refs, "audit rows for reads never made"
    assert sum(n for ref, n in rows.items() if ref in run.answered_refs) == run.figures.reads
    owned = dict(await run.pool.fetch("SELECT key_id, count(*) FROM audit_log "
                                      "WHERE case_ref LIKE 'e2e-%' GROUP BY 1"))
    assert owned.get(last_key, 0) == run.reads[last_key]
    unanswered = len(rows) - run.figures.reads
    print(f"audit: {run.figures.reads} answered reads, one row each; {unanswered} rows of "
          "reads whose answer was cut off by a kill")


async def _check_consumer_metrics(run: Run, consumer: Proc) -> None:
    """Counters reset per incarnation: the last one counted each record it committed once."""
    samples = await scrape(consumer.port)
    mine = await _committed(run.pool) - run.consumer_resumed_at
    assert sum(metric(samples, "platereg_events_total", outcome=o)
               for o in ("applied", "duplicate", "rejected")) == mine
