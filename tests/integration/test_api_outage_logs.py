"""A lookup that fails with 500 because PostgreSQL stopped mid-run: the served API's log, in
console and JSON formats, holds the error but no plate, owner value or local variable."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_helpers import bearer, insert_plate, owner, served_registry

from devtools.embedded import EmbeddedPostgres
from platereg.db import create_pool, migrate
from platereg.security.keys import create_key

pytestmark = pytest.mark.integration

PLATE = "OUTG8Q"
OWNER_ID = "ownr-outage-7731"
OWNER_NAME = "Hidden Outage Person"


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_a_500_from_a_stopped_database_logs_no_plate_owner_or_local(
        tmp_path: Path, fmt: str, servers) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)  # its own: this test stops it
    dsn = pg.start()
    try:
        migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            await insert_plate(pool, "CA-ON", PLATE, owner_data=owner(OWNER_ID, OWNER_NAME))
            _, key = await create_key(pool, role="operator", name="outage test")
        finally:
            await pool.close()
        # the suite's broker: `serve registry` needs one to start (COMMAND_NEEDS), whatever
        # the environment the suite was started in
        env = {"PLATEREG_DATABASE_URL": dsn, "PLATEREG_LOG_FORMAT": fmt,
               "PLATEREG_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap,
               "PLATEREG_LOG_LEVEL": "DEBUG"}
        with served_registry(str(tmp_path / "api.log"), env=env) as served:
            # A 500 closes its connection (uvicorn): one connection per request.
            no_reuse = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=served.url, timeout=30,
                                         limits=no_reuse) as client:
                query = {"jurisdiction": "CA-ON", "plate": PLATE, "purpose": "testing"}
                ok = await client.post("/v1/plates/query", json=query, headers=bearer(key))
                assert ok.status_code == 200 and ok.json()["owner"]["name"] == OWNER_NAME
                pg.stop()  # the database goes away mid-run
                failed = [await client.post("/v1/plates/query", json=query,
                                            headers=bearer(key)),
                          await client.post("/v1/plates/lookup", headers=bearer(key), json={
                              "plates": [{"jurisdiction": "CA-ON", "plate": PLATE}],
                              "purpose": "testing"}),
                          await client.post("/v1/owners/query", headers=bearer(key), json={
                              "owner_id": OWNER_ID, "purpose": "testing"})]
                assert [r.status_code for r in failed] == [500, 500, 500]
                for r in failed:
                    assert PLATE not in r.text and OWNER_ID not in r.text
            pg.start()  # back, so the stop flushes the audit rows and ends at once
            served.stop()
        log = served.log()
    finally:
        pg.stop()
    assert "Traceback" in log  # the 500s were logged with their tracebacks
    for secret in (PLATE, PLATE.lower(), OWNER_ID, OWNER_NAME, "example.org", "+1555",
                   key, pg.password):  # (the key id is logged on purpose)
        assert secret not in log, secret
    assert "locals" not in log.lower()
