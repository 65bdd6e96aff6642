"""No audited read is lost when the registry API is SIGKILLed under load (``platereg serve
registry``, real processes, the real PostgreSQL): every read answered 200 before the kill
has its audit row in ``audit_log``, exactly once, with one worker and with two (one
killed while the API keeps serving)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from api_helpers import bearer, insert_plate, pq, role_keys, served_registry
from cli_support import gone

from tests.integration.seam_support import wait_for

pytestmark = pytest.mark.integration

_refs = itertools.count()


async def _reader(url: str, key: str, answered: list[str], stop: asyncio.Event) -> None:
    """Single and batch reads, each with its own case ref, until ``stop`` or the server dies;
    ``answered`` gets the case ref of every read answered 200."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        batch = False
        while not stop.is_set():
            ref, batch = f"kill-{next(_refs)}", not batch
            try:
                if batch:
                    r = await client.post("/v1/plates/lookup", headers=bearer(key), json={
                        "plates": [{"jurisdiction": "CA-ON", "plate": "KILL1"},
                                   {"jurisdiction": "CA-ON", "plate": "NOPE9"}],
                        "purpose": "testing", "case_ref": ref})
                else:
                    r = await client.post("/v1/plates/query", headers=bearer(key),
                                          json=pq("CA-ON", "KILL1", case_ref=ref))
            except httpx.HTTPError:        # the server was killed mid-request
                await asyncio.sleep(0.01)
                continue
            if r.status_code == 200:   # a batch of two plates: two rows
                answered.extend([ref, ref] if batch else [ref])


async def _audited(pool) -> dict[str, int]:  # noqa: ANN001
    return dict(await pool.fetch("SELECT case_ref, count(*) FROM audit_log"
                                 " WHERE case_ref LIKE 'kill-%' GROUP BY 1"))


def _counts(refs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ref in refs:
        out[ref] = out.get(ref, 0) + 1
    return out


async def _load_then_kill(url: str, key: str, kill,  # noqa: ANN001
                         database_url: str) -> list[str]:
    """Eight concurrent readers; once 40 rows' reads are answered, ``audit_log`` is locked
    for a second (audit writes stall: reads whose rows are not committed must wait), then
    ``kill()`` and the lock is released; returns what was answered."""
    answered: list[str] = []
    stop = asyncio.Event()
    readers = [asyncio.create_task(_reader(url, key, answered, stop)) for _ in range(8)]
    await wait_for(lambda: _is(len(answered) >= 40), "reads answered under load", 60)
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
            await asyncio.sleep(1.0)
            await kill()
    finally:
        await locker.close()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*readers)
    return answered


async def test_every_read_answered_before_a_sigkill_has_its_audit_row(
        settings, pool, database_url: str, tmp_path: Path) -> None:
    await insert_plate(pool, "CA-ON", "KILL1")
    enf = (await role_keys(pool))["enforcement"]
    with served_registry(str(tmp_path / "api.log")) as served:
        async def kill() -> None:
            served.proc.kill()
            assert await asyncio.to_thread(served.proc.wait, 30) == -9

        answered = await _load_then_kill(served.url, enf, kill, database_url)
    assert len(answered) > 20
    audited = await _audited(pool)
    # Every answered read has its rows, once; a read the kill cut off may have its row too.
    expected = _counts(answered)
    assert {ref: audited.get(ref, 0) for ref in expected} == expected
    assert all(n in (1, 2) for n in audited.values())


async def test_a_killed_worker_loses_no_answered_read_and_the_api_serves_on(
        settings, pool, database_url: str, tmp_path: Path) -> None:
    await insert_plate(pool, "CA-ON", "KILL1")
    enf = (await role_keys(pool))["enforcement"]
    with served_registry(str(tmp_path / "api.log"), workers=2) as served:
        workers = [p for p in psutil.Process(served.proc.pid).children()
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in workers]

        async def kill() -> None:
            workers[0].kill()
            assert await asyncio.to_thread(gone, workers[0].pid)

        answered = await _load_then_kill(served.url, enf, kill, database_url)
        # the API still serves (uvicorn starts a new worker)
        after = await _load_then_kill(served.url, enf, _nothing, database_url)
        assert after
    expected = _counts(answered + after)
    audited = await _audited(pool)
    assert {ref: audited.get(ref, 0) for ref in expected} == expected


async def _nothing() -> None:
    return None


async def _is(value: bool) -> bool:
    return value
