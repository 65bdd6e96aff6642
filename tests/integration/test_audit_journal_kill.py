"""Audit rows survive a SIGKILL of the registry API (``platereg serve registry``, real
processes, the real PostgreSQL): rows still buffered when the process is killed are in
``audit_log`` exactly once after the next process starts (it replays the killed one's
journal), with one worker or with a sibling worker that stays alive (its journal is never
taken)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import psutil
import pytest
from api_helpers import bearer, insert_plate, pq, role_keys, served_registry
from cli_support import gone

from registry.api.audit_journal import Orphan
from tests.integration.seam_support import wait_for

pytestmark = pytest.mark.integration

#: An hour between timed flushes: every row of these tests is still buffered at the kill.
SLOW = {"PLATEREG_AUDIT_FLUSH_SECONDS": "3600"}


async def _read(url: str, key: str, refs: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for ref in refs:
            r = await client.post("/v1/plates/query", headers=bearer(key),
                                  json=pq("CA-ON", "KILL1", case_ref=ref))
            assert r.status_code == 200, r.text


async def _audited(pool) -> dict[str, int]:  # noqa: ANN001
    return dict(await pool.fetch("SELECT case_ref, count(*) FROM audit_log GROUP BY 1"))


async def test_rows_buffered_by_a_sigkilled_api_are_written_once_by_the_next(
        settings, pool, tmp_path: Path) -> None:
    await insert_plate(pool, "CA-ON", "KILL1")
    enf = (await role_keys(pool))["enforcement"]
    refs = [f"kill-{i}" for i in range(40)]
    with served_registry(str(tmp_path / "first.log"), env=SLOW) as served:
        await _read(served.url, enf, refs)
        assert await _audited(pool) == {}          # buffered, not written: the kill loses them
        served.proc.kill()
        assert await asyncio.to_thread(served.proc.wait, 30) == -9
    with served_registry(str(tmp_path / "second.log"), env=SLOW) as served:
        async def replayed() -> bool:
            return await _audited(pool) == dict.fromkeys(refs, 1)

        await wait_for(replayed, "every read before the kill in audit_log once", 60)
        await _read(served.url, enf, ["after-1"])
        assert await asyncio.to_thread(served.stop) in (0, -15)
    assert await _audited(pool) == {**dict.fromkeys(refs, 1), "after-1": 1}
    assert await pool.fetchval("SELECT count(DISTINCT row_id) FROM audit_log") == 41
    # replayed and cleanly stopped journals are removed
    assert os.listdir(settings.audit_journal_path()) == []
    logs = served.log()
    assert "audit journal replayed" in logs and "KILL1" not in logs and "kill-" not in logs


def _segment_of(pid: int) -> list[Path]:
    return [Path(f.path) for f in psutil.Process(pid).open_files() if f.path.endswith(".jnl")]


def _rows_of(pid: int, directory: Path) -> list[str]:
    """The case refs in the journal of the worker ``pid`` (found by its open segment)."""
    current = _segment_of(pid)
    assert len(current) == 1, current
    writer = current[0].name.split(".")[0]
    segments = sorted(directory.glob(f"{writer}.*.jnl"))
    return [row[8] for row in Orphan(directory, writer, -1, segments).read()[1]]


async def test_a_killed_worker_is_replayed_and_its_live_sibling_is_left_alone(
        settings, pool, tmp_path: Path) -> None:
    await insert_plate(pool, "CA-ON", "KILL1")
    enf = (await role_keys(pool))["enforcement"]
    journal = settings.audit_journal_path()
    refs = [f"w-{i}" for i in range(60)]
    with served_registry(str(tmp_path / "api.log"), workers=2, env=SLOW) as served:
        # New connections land on either worker.
        await asyncio.gather(*(_read(served.url, enf, refs[i::6]) for i in range(6)))
        assert await _audited(pool) == {}
        workers = [p for p in psutil.Process(served.proc.pid).children()
                   if _segment_of(p.pid)]
        assert len(workers) == 2                   # (not multiprocessing's helper)
        killed = next(w for w in workers if _rows_of(w.pid, journal))
        live = next(w for w in workers if w.pid != killed.pid)
        lost = _rows_of(killed.pid, journal)
        kept = _rows_of(live.pid, journal)
        assert sorted(lost + kept) == sorted(refs) and lost
        killed.kill()
        assert await asyncio.to_thread(gone, killed.pid)

        async def replayed() -> bool:   # by the worker uvicorn starts in its place
            return await _audited(pool) == dict.fromkeys(lost, 1)

        await wait_for(replayed, "the killed worker's rows in audit_log once", 60)
        assert live.is_running() and sorted(_rows_of(live.pid, journal)) == sorted(kept)
        assert await asyncio.to_thread(served.stop) in (0, -15)
    assert await _audited(pool) == dict.fromkeys(refs, 1)
    assert os.listdir(journal) == []
