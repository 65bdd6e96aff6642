"""Registry API: single lookups through the full stack vs. a bare Starlette + asyncpg baseline,
and batch lookups of 1,000 plates.

* 1,000,000 plates (``--quick``: 50,000) bulk-loaded with one INSERT ... SELECT
  over generate_series (a mix of valid, expired, suspended, stolen, cancelled).
* The API runs as ``platereg serve registry --workers W`` (auth, audit,
  metrics, JSON access log to a file); the baseline is ``bench/api_baseline.py``
  under the same uvicorn with the same worker count and the same SQL.
* Load generator: ``wrk`` (Debian package ``wrk``) with Lua scripts choosing a
  random plate per request (single) and sending a 1,000-plate body (batch).
  If wrk is missing the bench tries ``apt-get install -y wrk`` when running as
  root, else reports that it was skipped and how to install it.

Environment knobs: PLATEREG_BENCH_API_WORKERS (default 1),
PLATEREG_BENCH_API_CONNECTIONS (64), PLATEREG_BENCH_API_SECONDS (20; quick: 5).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from bench.common import BenchContext, Figure
from platereg.debian_tools import find_or_install
from platereg.embedded import free_port, stop_process
from platereg.keys import create_key

NAME = "api"
JURISDICTION = "CA-ON"


def _plate(i: int) -> str:
    return f"P{i:07d}"


LOAD_SQL = """
INSERT INTO plates (plate_key, jurisdiction, plate, issued, plate_class, expires_on, vehicle,
                    owner_id, owner, device_id, suspension_reasons, stolen, cancelled,
                    last_event_time, last_event_id, event_count)
SELECT 'CA-ON/P' || lpad(i::text, 7, '0'), 'CA-ON', 'P' || lpad(i::text, 7, '0'), true,
       'passenger', current_date + ((i % 730) - 60),
       jsonb_build_object('vin', 'VIN' || i, 'make', 'Honda', 'model', 'Civic',
                          'year', 2000 + i % 25, 'colour', 'blue'),
       'own-' || (i / 2),
       jsonb_build_object('owner_id', 'own-' || (i / 2), 'name', 'Owner ' || i,
                          'email', 'o' || i || '@example.org', 'language', 'en'),
       CASE WHEN i % 10 = 0 THEN 'dev-' || i END,
       CASE WHEN i % 37 = 0 THEN ARRAY['insurance_lapsed'] ELSE '{}'::text[] END,
       i % 101 = 0, i % 211 = 0, now(), 'ev-' || i, 1
FROM generate_series(1, $1) AS i
"""


def _wrk() -> str | None:
    return find_or_install("wrk", "wrk", who="bench_api")


SINGLE_LUA = """
local n = {n}
local headers = {{["Authorization"] = "Bearer {key}", ["X-Purpose"] = "bench"}}
math.randomseed(os.time() + {seed})
request = function()
  return wrk.format("GET", string.format("/v1/plates/CA-ON/P%07d", math.random(1, n)), headers)
end
"""

BATCH_LUA = """
local n = {n}
math.randomseed(os.time() + {seed})
local parts = {{}}
for i = 1, 1000 do
  parts[i] = string.format('{{"jurisdiction":"CA-ON","plate":"P%07d"}}', math.random(1, n))
end
wrk.method = "POST"
wrk.path = "/v1/plates/lookup"
wrk.body = '{{"purpose":"bench","plates":[' .. table.concat(parts, ",") .. ']}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse_wrk(out: str) -> dict[str, float]:
    result: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        result["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = float(m.group(1)) if m else 0.0
    return result


def _run_wrk(wrk: str, url: str, script: Path, *, connections: int, seconds: int,
             threads: int = 1) -> dict[str, float]:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    parsed = _parse_wrk(out)
    if "rps" not in parsed:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    return parsed


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/plates/CA-ON/P0000001", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


async def _prepare(dsn: str, n: int) -> tuple[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(LOAD_SQL, n)
        await conn.execute("VACUUM ANALYZE plates")
        load_s = time.perf_counter() - started
        _, key = await create_key(conn, role="enforcement", name="bench", rate_limit=1e9)
        return key, load_s
    finally:
        await conn.close()


async def _audit_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM audit_log")
    finally:
        await conn.close()


def run(ctx: BenchContext) -> list[Figure]:
    n = 50_000 if ctx.quick else 1_000_000
    seconds = int(os.environ.get("PLATEREG_BENCH_API_SECONDS", "5" if ctx.quick else "20"))
    connections = int(os.environ.get("PLATEREG_BENCH_API_CONNECTIONS", "64"))
    workers = int(os.environ.get("PLATEREG_BENCH_API_WORKERS", "1"))
    wrk = _wrk()
    if wrk is None:
        print("bench_api: SKIPPED: the load generator wrk is not installed "
              "(Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return [Figure(NAME, "single lookups", 0, "req/s", notes="SKIPPED: wrk not installed")]

    dsn = asyncio.run(ctx.fresh_database())
    settings = ctx.settings(dsn)
    key, load_s = asyncio.run(_prepare(dsn, n))
    print(f"bench_api: loaded {n:,} plates in {load_s:.1f} s", file=sys.stderr)
    work = ctx.work_dir / "bench_api"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PLATEREG_DATABASE_URL": dsn, "PLATEREG_LOG_FORMAT": "json",
           "PLATEREG_LOG_LEVEL": "INFO", "PLATEREG_DB_POOL_MAX": "16"}
    single_lua = work / "single.lua"
    single_lua.write_text(SINGLE_LUA.format(n=n, key=key, seed=1))
    batch_lua = work / "batch.lua"
    batch_lua.write_text(BATCH_LUA.format(n=n, key=key, seed=2))
    figures: list[Figure] = []
    note = f"wrk -t1 -c{connections} {seconds}s, {n:,} plates, {workers} worker(s)"

    # Baseline: bare Starlette + asyncpg, same SQL, same uvicorn settings.
    port = free_port()
    proc = _serve([sys.executable, "-m", "uvicorn", "bench.api_baseline:app", "--port",
                   str(port), "--workers", str(workers), "--no-access-log",
                   "--log-level", "warning"], env, port, work / "baseline.log")
    try:
        _run_wrk(wrk, f"http://127.0.0.1:{port}", single_lua, connections=connections,
                 seconds=2)  # warm-up
        base = _run_wrk(wrk, f"http://127.0.0.1:{port}", single_lua,
                        connections=connections, seconds=seconds)
    finally:
        stop_process(proc, signal.SIGTERM, 30)

    port = free_port()
    before = asyncio.run(_audit_rows(dsn))
    proc = _serve([sys.executable, "-m", "platereg.cli", "serve", "registry", "--port",
                   str(port), "--workers", str(workers)], env, port, work / "api.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _run_wrk(wrk, url, single_lua, connections=connections, seconds=2)  # warm-up
        api = _run_wrk(wrk, url, single_lua, connections=connections, seconds=seconds)
        batch1 = _run_wrk(wrk, url, batch_lua, connections=1, seconds=max(5, seconds // 2))
        batch = _run_wrk(wrk, url, batch_lua, connections=4, seconds=max(5, seconds // 2))
    finally:
        # SIGTERM: the API flushes its audit buffer before exiting
        stop_process(proc, signal.SIGTERM, 30)
    audited = asyncio.run(_audit_rows(dsn)) - before
    log_lines = (work / "api.log").read_text(errors="replace").count("\n")
    del settings

    errors = f"; non-2xx: {int(api['non2xx'])}" if api["non2xx"] else ""
    figures += [
        Figure(NAME, "single lookups (full stack)", api["rps"], "req/s", base["rps"],
               "bare Starlette+asyncpg", ">= 3,000 and >= 0.6x baseline", note + errors),
        Figure(NAME, "single lookup p50", api["p50"], "ms", base.get("p50"),
               "bare Starlette+asyncpg", "", note),
        Figure(NAME, "single lookup p99", api["p99"], "ms", base.get("p99"),
               "bare Starlette+asyncpg", "< 25 ms", note),
        Figure(NAME, "batch of 1,000 p50 (1 at a time)", batch1["p50"], "ms", None, "",
               "< 60 ms", f"wrk -t1 -c1, {batch1['rps']:.1f} batches/s, p99 {batch1['p99']:.1f} ms"
               + (f"; non-2xx: {int(batch1['non2xx'])}" if batch1["non2xx"] else "")),
        Figure(NAME, "batch of 1,000 p50 (4 concurrent)", batch["p50"], "ms", None, "",
               "< 60 ms", f"wrk -t1 -c4, {batch['rps']:.1f} batches/s, p99 {batch['p99']:.1f} ms"
               + (f"; non-2xx: {int(batch['non2xx'])}" if batch["non2xx"] else "")),
        Figure(NAME, "audit rows written", audited, "rows", None, "", "",
               f"requests sent incl. warm-up; api log lines: {log_lines}"),
    ]
    return figures
