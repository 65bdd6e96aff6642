"""The registry API on a real streaming replica (``devtools.embedded.EmbeddedReplica``: a
``pg_basebackup -R`` hot standby of an embedded PostgreSQL of this module's own).

* Reads come from the replica: with its replay paused, a plate written on the primary
  afterwards is not found, while audit rows are written to the primary.
* ``as_of`` is the replica's replay time, not the time of the request.
* The lag rule: a replica held back (replay paused) serves until it is more than
  ``PLATEREG_REPLICA_MAX_LAG_SECONDS`` behind, is then left out (reads go to the primary,
  one log line, ``platereg_replica_serving`` 0) and serves again once replay resumes.
* The replica SIGKILLed under load: no 5xx (reads in flight and after run on the
  primary); restarted, it serves again.

No Kafka: the API's broker is only its /readyz check.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from api_helpers import (
    Api,
    bearer,
    insert_change,
    insert_event,
    insert_plate,
    pq,
    running_api,
)
from cli_support import eventually
from prometheus_client import REGISTRY

from devtools.embedded import EmbeddedPostgres, EmbeddedReplica
from platereg.db import connect, create_database, create_pool, migrate
from platereg.replicas import replica_name
from platereg.security.keys import create_key
from platereg.settings import Settings
from registry.api.hotlist import full_cursor

pytestmark = pytest.mark.integration

CHECK_SECONDS = 0.2


@dataclass
class Cluster:
    primary: EmbeddedPostgres
    replica: EmbeddedReplica
    dsn: str           # the registry database on the primary
    replica_dsn: str   # the same database on the replica


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedPostgres,
                                                                          EmbeddedReplica]]:
    base = tmp_path_factory.mktemp("replicas")
    primary = EmbeddedPostgres(base / "primary", durable=False)
    replica = EmbeddedReplica(primary, base / "replica")
    try:
        primary.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture(scope="module")
async def cluster(servers: tuple[EmbeddedPostgres, EmbeddedReplica]) -> Cluster:
    primary, replica = servers
    dsn = await create_database(primary.dsn(), "registry")
    migrate(dsn)
    replica.start()   # a base backup of the migrated database
    return Cluster(primary, replica, dsn, replica.dsn("registry"))


@pytest.fixture
async def primary(cluster: Cluster) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(cluster.dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def standby(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the replica; replay is resumed whatever the test did."""
    if not cluster.replica.running:
        cluster.replica.start()
    conn = await connect(cluster.replica_dsn)
    yield conn
    with contextlib.suppress(Exception):
        await conn.execute("SELECT pg_wal_replay_resume()")
    await conn.close()


def settings_for(cluster: Cluster, tmp_path: Path, max_lag: float) -> Settings:
    # Keys' rate limits out of the way: the load of the kill test is eight clients back to
    # back, and a 429 from a fast moment is not what it looks at (every answer 200 or 404).
    return Settings(database_url=cluster.dsn, database_read_urls=[cluster.replica_dsn],
                    replica_max_lag_seconds=max_lag, replica_check_seconds=CHECK_SECONDS,
                    kafka_bootstrap_servers="127.0.0.1:9", data_dir=tmp_path / "data",
                    rate_limit_enforcement_per_second=1_000_000,
                    rate_limit_operator_per_second=1_000_000)


@contextlib.asynccontextmanager
async def api_on_replica(cluster: Cluster, primary: asyncpg.Pool, tmp_path: Path,
                         max_lag: float) -> AsyncIterator[tuple[Api, dict[str, str]]]:
    keys = {role: (await create_key(primary, role=role, name=f"replica {role}"))[1]
            for role in ("enforcement", "operator")}
    async with running_api(settings_for(cluster, tmp_path, max_lag)) as api:
        yield api, keys


def metric(cluster: Cluster, name: str) -> float | None:
    """``name``'s value for the replica (``platereg_replica_serving``, ``..._lag_seconds``)."""
    return REGISTRY.get_sample_value(name, {"replica": replica_name(cluster.replica_dsn)})


async def serving(cluster: Cluster, expected: int) -> bool:
    return metric(cluster, "platereg_replica_serving") == expected


async def replicated(standby: asyncpg.Connection, key: str) -> bool:
    return bool(await standby.fetchval("SELECT count(*) FROM plates WHERE plate_key = $1", key))


async def query(api: Api, key: str, plate: str, **extra: Any) -> Any:
    return await api.client.post("/v1/plates/query", json=pq("CA-ON", plate, **extra),
                                 headers=bearer(key))


async def pause(standby: asyncpg.Connection) -> None:
    await standby.execute("SELECT pg_wal_replay_pause()")
    await eventually(lambda: standby.fetchval("SELECT pg_get_wal_replay_pause_state() = "
                                              "'paused'"), "replay did not pause")


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_reads_come_from_the_replica_audit_rows_go_to_the_primary_as_of_is_replays(
        cluster: Cluster, primary: asyncpg.Pool, standby: asyncpg.Connection,
        tmp_path: Path) -> None:
    seen = await insert_plate(primary, "CA-ON", "RPL1")
    await eventually(lambda: replicated(standby, seen), "the replica never replayed RPL1")
    async with api_on_replica(cluster, primary, tmp_path, max_lag=60) as (api, keys):
        await eventually(lambda: serving(cluster, 1), "the replica never served")
        await pause(standby)
        late = await insert_plate(primary, "CA-ON", "RPL2")   # on the primary only
        await insert_event(primary, late, "ev-rpl2", "plate.issued",
                           dt.datetime.now(dt.UTC), {})
        written = await primary.fetchval("SELECT clock_timestamp()")
        assert not await replicated(standby, late)
        await asyncio.sleep(1.5)   # the replica falls behind, still within the 60 s
        replayed = await standby.fetchval("SELECT pg_last_xact_replay_timestamp()")

        asked = dt.datetime.now(dt.UTC)
        found = await query(api, keys["enforcement"], "RPL1")
        missing = await query(api, keys["enforcement"], "RPL2")
        batch = await api.client.post("/v1/plates/lookup", headers=bearer(keys["operator"]),
                                      json={"plates": [{"jurisdiction": "CA-ON", "plate": p}
                                                       for p in ("RPL1", "RPL2")],
                                            "purpose": "testing"})
        history = await api.client.post("/v1/plates/history", json=pq("CA-ON", "RPL2"),
                                        headers=bearer(keys["operator"]))
        assert (found.status_code, missing.status_code, history.status_code) == (200, 404, 404)
        assert [r["status"] for r in batch.json()["results"]] == ["valid", "unknown"]

        # as_of: the replica's replay time (before the plate it has not replayed), not now
        as_of = parse(found.json()["as_of"])
        assert replayed <= as_of < written, (replayed, as_of, written)
        assert as_of < asked - dt.timedelta(seconds=1)
        assert batch.json()["results"][0]["as_of"] == found.json()["as_of"]

        # the audit rows were committed to the primary (the replica is read-only) before
        # each read was answered
        assert await primary.fetchval(
            "SELECT count(*) FROM audit_log WHERE plate IN ('RPL1', 'RPL2')") == 5

        await standby.execute("SELECT pg_wal_replay_resume()")
        await eventually(lambda: replicated(standby, late), "RPL2 never replayed")
        await eventually(lambda: _status(api, keys["enforcement"], "RPL2", 200),
                         "RPL2 never found once replayed")
        history = await api.client.post("/v1/plates/history", json=pq("CA-ON", "RPL2"),
                                        headers=bearer(keys["operator"]))
        assert history.status_code == 200


async def _status(api: Api, key: str, plate: str, expected: int) -> bool:
    return (await query(api, key, plate)).status_code == expected


async def test_a_replica_behind_the_max_lag_is_left_out_and_serves_again_after_catching_up(
        cluster: Cluster, primary: asyncpg.Pool, standby: asyncpg.Connection,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    max_lag = 3.0   # wide enough for a loaded machine to answer the first query within it
    async with api_on_replica(cluster, primary, tmp_path, max_lag=max_lag) as (api, keys):
        key = keys["enforcement"]
        await eventually(lambda: serving(cluster, 1), "the replica never served")
        await pause(standby)
        await insert_plate(primary, "CA-ON", "LAG1")
        written = time.monotonic()
        # within the max lag the replica still serves: the new plate is not there yet
        assert (await query(api, key, "LAG1")).status_code == 404
        await eventually(lambda: serving(cluster, 0),
                         "the replica was never left out", timeout=15)
        assert time.monotonic() - written > max_lag - 2 * CHECK_SECONDS - 0.1
        # left out: reads go to the primary, as of now
        answer = await query(api, key, "LAG1")
        assert answer.status_code == 200
        assert parse(answer.json()["as_of"]) > dt.datetime.now(dt.UTC) - dt.timedelta(
            seconds=1)
        lag = metric(cluster, "platereg_replica_lag_seconds")
        assert lag is not None and lag > max_lag

        await standby.execute("SELECT pg_wal_replay_resume()")
        await eventually(lambda: serving(cluster, 1),
                         "the replica never served again", timeout=15)
        # serving again: reads come from it (held back once more, a new plate is missing)
        await pause(standby)
        await insert_plate(primary, "CA-ON", "LAG2")
        assert (await query(api, key, "LAG2")).status_code == 404
        await standby.execute("SELECT pg_wal_replay_resume()")
    out = capsys.readouterr().out
    assert "read replica left out of reads" in out and "reason=behind" in out
    assert "read replica serving reads" in out
    assert cluster.replica.password not in out and "LAG1" not in out


async def _load(api: Api, keys: dict[str, str], plates: list[str], until: float,
                statuses: list[int]) -> None:
    """Single queries, batches, history and the hotlist, one after another, until then."""
    turn = 0
    while time.monotonic() < until:
        plate = plates[turn % len(plates)]
        turn += 1
        requests = (
            ("/v1/plates/query", pq("CA-ON", plate), keys["enforcement"]),
            ("/v1/plates/lookup", {"plates": [{"jurisdiction": "CA-ON", "plate": p}
                                              for p in plates[:20]], "purpose": "testing"},
             keys["enforcement"]),
            ("/v1/plates/history", pq("CA-ON", plate), keys["operator"]),
        )
        for path, body, key in requests:
            statuses.append((await api.client.post(path, json=body, headers=bearer(key)))
                            .status_code)
        hotlist = await api.client.get("/v1/hotlist", params={"purpose": "testing"},
                                       headers=bearer(keys["enforcement"]))
        statuses.append(hotlist.status_code)


async def test_the_replica_killed_under_load_costs_no_answer(
        cluster: Cluster, primary: asyncpg.Pool, standby: asyncpg.Connection,
        tmp_path: Path) -> None:
    plates = [f"KIL{i}" for i in range(40)]
    for i, plate in enumerate(plates):
        await insert_plate(primary, "CA-ON", plate, stolen=i % 7 == 0)
    await eventually(lambda: replicated(standby, "CA-ON/KIL39"), "the plates never replayed")
    await standby.close()
    async with api_on_replica(cluster, primary, tmp_path, max_lag=5) as (api, keys):
        await eventually(lambda: serving(cluster, 1), "the replica never served")
        statuses: list[int] = []
        until = time.monotonic() + 4
        load = [asyncio.create_task(_load(api, keys, plates, until, statuses))
                for _ in range(8)]
        await asyncio.sleep(1.5)
        served_before = len(statuses)
        cluster.replica.kill()
        await asyncio.gather(*load)
        assert served_before > 0 and len(statuses) > served_before
        assert {s for s in statuses if s >= 500} == set(), sorted(set(statuses))
        assert set(statuses) <= {200, 404}
        assert await serving(cluster, 0)

        cluster.replica.start()   # the same data directory: a standby again
        await eventually(lambda: serving(cluster, 1),
                         "the restarted replica never served", timeout=30)
        assert (await query(api, keys["enforcement"], "KIL1")).status_code == 200


async def test_a_later_hotlist_page_needs_its_snapshot_replayed_else_the_primary_reads_it(
        cluster: Cluster, primary: asyncpg.Pool, standby: asyncpg.Connection,
        tmp_path: Path) -> None:
    """The full list's pages and the changes after its snapshot fit together only if
    each page is read where the snapshot is replayed: a page asked of a replica that has
    not replayed it yet is read on the primary."""
    async with api_on_replica(cluster, primary, tmp_path, max_lag=60) as (api, keys):
        await eventually(lambda: serving(cluster, 1), "the replica never served")
        await pause(standby)
        key = await insert_plate(primary, "CA-ON", "HOT1", stolen=True)
        view = {"jurisdiction": "CA-ON", "plate": "HOT1", "status": "stolen"}
        snapshot = await insert_change(primary, view, True, False)   # not replayed
        assert await standby.fetchval("SELECT coalesce(max(seq), 0) FROM status_changes"
                                      ) < snapshot
        # a second page of a full list whose snapshot the replica has not replayed
        cursor = full_cursor(snapshot, "CA-ON/A").encode(api.app.state.ctx.sealer)
        page = await api.client.get("/v1/hotlist", headers=bearer(keys["enforcement"]),
                                    params={"purpose": "testing", "since": cursor})
        assert page.status_code == 200
        assert "HOT1" in [e["plate"] for e in page.json()["entries"]], key
        # the first page is read on the replica, with its own (older) snapshot
        first = await api.client.get("/v1/hotlist", headers=bearer(keys["enforcement"]),
                                     params={"purpose": "testing"})
        assert "HOT1" not in [e["plate"] for e in first.json()["entries"]]
