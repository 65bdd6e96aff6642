"""The registry API as real processes (`platereg serve registry`): revocation reaches every
process, a clean stop loses no audit row, and no log line holds a plate or owner data."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from api_helpers import bearer, insert_plate, owner, role_keys, running_api, served_registry
from cli_support import platereg

from platereg.security.keys import create_key

pytestmark = pytest.mark.integration

REV1 = {"jurisdiction": "CA-ON", "plate": "REV1", "purpose": "testing"}


async def test_revocation_reaches_every_process_within_5_seconds(settings, pool,
                                                                  tmp_path) -> None:
    await insert_plate(pool, "CA-ON", "REV1")
    key_id, key = await create_key(pool, role="enforcement", name="to revoke")
    with served_registry(str(tmp_path / "api.log")) as served:
        async with running_api(settings) as api, httpx.AsyncClient(base_url=served.url) as remote:
            clients = (api.client, remote)
            for client in clients:  # both processes have the key cached as valid
                r = await client.post("/v1/plates/query", json=REV1, headers=bearer(key))
                assert r.status_code == 200
            done = await asyncio.to_thread(platereg, "keys", "revoke", key_id)
            assert done.returncode == 0, done.stderr
            revoked_at = time.monotonic()
            refused: dict[int, float] = {}
            while len(refused) < 2 and time.monotonic() - revoked_at < 5.0:
                for i, client in enumerate(clients):
                    if i not in refused:
                        r = await client.post("/v1/plates/query", json=REV1, headers=bearer(key))
                        if r.status_code == 401:
                            refused[i] = time.monotonic() - revoked_at
                await asyncio.sleep(0.1)
            assert sorted(refused) == [0, 1], f"still accepted after 5 s by {refused}"
            for client in clients:  # and it stays refused
                r = await client.post("/v1/plates/query", json=REV1, headers=bearer(key))
                assert r.status_code == 401


async def test_every_concurrent_read_is_answered_after_its_audit_row_is_committed(
        settings, pool) -> None:
    await insert_plate(pool, "CA-ON", "SHUT1")
    enf = bearer((await role_keys(pool))["enforcement"])
    async with running_api(settings) as api:
        async def read() -> int:
            r = await api.client.post("/v1/plates/query", headers=enf, json={
                "jurisdiction": "CA-ON", "plate": "SHUT1", "purpose": "testing"})
            return r.status_code

        assert await asyncio.gather(*(read() for _ in range(300))) == [200] * 300
        # Nothing left to write: every answered read's row is in audit_log already,
        # written in fewer statements than reads (concurrent reads share a write).
        assert api.app.state.audit.pending == 0
        assert await pool.fetchval("SELECT count(*) FROM audit_log") == 300
        assert api.app.state.audit.writes < 300


async def test_sigterm_to_two_workers_loses_no_audit_row(settings, pool, tmp_path) -> None:
    await insert_plate(pool, "CA-ON", "SIG1")
    enf = bearer((await role_keys(pool))["enforcement"])
    # 2,000 plates in a moment from one key: more than the enforcement default allows.
    with served_registry(str(tmp_path / "api.log"), workers=2,
                         env={"PLATEREG_RATE_LIMIT_ENFORCEMENT_PER_SECOND": "100000"}) as served:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=served.url, limits=limits) as client:
            async def one(i: int) -> int:
                r = await client.post("/v1/plates/lookup", headers=enf, json={"plates": [
                    {"jurisdiction": "CA-ON", "plate": "SIG1"}] * 10, "purpose": "testing"})
                return r.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(200)))
        assert statuses == [200] * 200
        code = await asyncio.to_thread(served.stop)
        assert code == 0, served.log()[-2000:]
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 2000
    pids = {line for line in served.log().splitlines() if "Started server process" in line}
    assert len(pids) == 2  # two workers served (and flushed) their share


async def test_logs_never_hold_plates_names_or_raw_paths(settings, pool, tmp_path) -> None:
    plates = ["LOGPL8", "ZQ77XK"]
    for p in plates:
        await insert_plate(pool, "CA-ON", p, owner_data=owner(f"ownr-{p}", f"Hidden Person {p}"))
    keys = await role_keys(pool)
    env = {"PLATEREG_LOG_LEVEL": "DEBUG", "PLATEREG_LOG_FORMAT": "json"}
    with served_registry(str(tmp_path / "api.log"), env=env) as served:
        async with httpx.AsyncClient(base_url=served.url) as c:
            for role in ("enforcement", "operator", "portal"):
                h = bearer(keys[role])
                for p in plates + ["NOPLATE9"]:
                    body = {"jurisdiction": "ca-on", "plate": p.lower(), "purpose": "testing"}
                    for route in ("query", "candidates", "history"):
                        await c.post(f"/v1/plates/{route}", headers=h, json=body)
                    await c.post("/v1/plates/query", headers=h, json={**body, "purpose": p})
                await c.post("/v1/plates/lookup", headers=h, json={"plates": [
                    {"jurisdiction": "CA-ON", "plate": p} for p in plates], "purpose": "testing"})
                await c.post("/v1/plates/lookup", headers=h, json={"plates": [
                    {"jurisdiction": "CA-ON", "plate": "LOGPL8-TOO-LONG"}], "purpose": "testing"})
                await c.post("/v1/plates/lookup", headers=h, content=b'{"plates": LOGPL8')
                await c.post("/v1/plates/query", headers=h, json={
                    "jurisdiction": "CA-ON", "plate": "LOGPL8$BAD", "purpose": "testing"})
                await c.get("/v1/hotlist", params={"purpose": "testing"}, headers=h)
                await c.post("/v1/owners/query", headers=h, json={
                    "owner_id": f"ownr-{plates[0]}", "purpose": "testing"})
                await c.post("/v1/audit/query", headers=h, json={
                    "jurisdiction": "CA-ON", "plate": plates[0], "purpose": "audit_review"})
                await c.get(f"/nowhere/{plates[0]}", headers=h)
                await c.get(f"/v1/plates/CA-ON/{plates[0]}", headers=h)  # removed route
            await c.post("/v1/plates/query", headers=bearer("prk_bad_" + plates[1]),
                         json={"jurisdiction": "CA-ON", "plate": plates[0], "purpose": "testing"})
        served.stop()
    log = served.log()
    compact = log.replace('": "', '":"')   # the access line is compact JSON
    assert '"route":"/v1/plates/query"' in compact  # the log did record requests
    assert '"route":"/v1/audit/query"' in compact and '"route":"unmatched"' in compact
    for secret in [*plates, "NOPLATE9", "logpl8", "Hidden Person", "ownr-", "example.org",
                   "+1555", "/v1/plates/CA-ON/", "/v1/plates/ca-on/", "/nowhere"]:
        assert secret not in log, secret
