"""Registry API: single lookups through the full stack vs. a like-for-like bare Starlette +
asyncpg endpoint, and batch lookups of 1,000 plates.

* 1,000,000 plates (``--quick``: 50,000) bulk-loaded with one INSERT ... SELECT
  over generate_series (a mix of valid, expired, suspended, stolen, cancelled).
* The API runs as ``platereg serve registry --workers W`` (auth, audit,
  metrics, JSON access log to a file); the baseline is ``bench/api_baseline.py``
  under the same uvicorn with the same worker count, pool size, connection
  codecs, no reset query on release, and the same SQL.
* Both servers run at once, pinned (``taskset``) away from the load generator's
  own core; the A/B runs are interleaved (A B B A ...) so that the shared
  machine's load falls on both alike, and each figure sums (throughput) or takes
  the median (latency) of its rounds.
* Closed loop: ``wrk`` (Debian package ``wrk``) with Lua scripts choosing a
  random plate per request (single) and sending a 1,000-plate body (batch).
  Fixed rate: ``hey -q`` (Debian package ``hey``) at PLATEREG_BENCH_API_RATE
  requests/s over the same connections, p99 beside the baseline's p99 at the
  same rate (hey sends one plate: it has no per-request script). Missing tools
  are installed with apt-get when running as root, else the figure is skipped.

Environment knobs: PLATEREG_BENCH_API_PLATES (1,000,000; quick: 50,000),
PLATEREG_BENCH_API_WORKERS (default 1),
PLATEREG_BENCH_API_CONNECTIONS (64), PLATEREG_BENCH_API_SECONDS (per server, 24;
quick: 6), PLATEREG_BENCH_API_ROUNDS (3; quick: 2), PLATEREG_BENCH_API_RATE (2000).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.common import BenchContext, Figure
from devtools.debian_tools import find_or_install
from devtools.embedded import free_port, stop_process
from platereg.security.keys import create_key

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




def pinning() -> tuple[list[str], list[str]]:
    """``taskset`` prefixes: (servers, load generator). The generator gets the last CPU
    of this process's affinity to itself; the servers get the others."""
    cpus = sorted(os.sched_getaffinity(0))
    taskset = find_or_install("taskset", "util-linux", who="bench")
    if len(cpus) < 2 or taskset is None:
        return [], []
    servers = ",".join(str(c) for c in cpus[:-1])
    return [taskset, "-c", servers], [taskset, "-c", str(cpus[-1])]


# Lua for wrk: GET shape (path parameters) or POST /v1/plates/query (body).
SINGLE_GET_LUA = """
local n = {n}
local headers = {{["Authorization"] = "Bearer {key}", ["X-Purpose"] = "bench"}}
math.randomseed(os.time() + {seed})
request = function()
  return wrk.format("GET", string.format("/v1/plates/CA-ON/P%07d", math.random(1, n)), headers)
end
"""
SINGLE_POST_LUA = """
local n = {n}
local headers = {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json"}}
math.randomseed(os.time() + {seed})
request = function()
  local body = string.format('{{"jurisdiction":"CA-ON","plate":"P%07d","purpose":"testing"}}',
                             math.random(1, n))
  return wrk.format("POST", "/v1/plates/query", headers, body)
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
wrk.body = '{{"purpose":"testing","plates":[' .. table.concat(parts, ",") .. ']}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out: str) -> dict[str, float]:
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
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if m:
        result["requests"] = float(m.group(1))
        result["seconds"] = float(m.group(2)) * _UNITS[m.group(3)] / 1e3
    return result


def parse_hey(out: str) -> dict[str, float]:
    result: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        result["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%+ in ([\d.]+) secs", out, re.M)
        if m:
            result[f"p{pct}"] = float(m.group(1)) * 1e3
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    result["requests"] = float(sum(statuses.values()))
    result["non2xx"] = float(sum(n for c, n in statuses.items() if not 200 <= c < 300))
    m = re.search(r"Error distribution:(.*)", out, re.S)
    result["errors"] = float(sum(int(n) for n in re.findall(r"\[(\d+)\]", m.group(1)))) \
        if m else 0.0
    return result


@dataclass
class Rounds:
    """The interleaved runs of one measurement against one server."""

    runs: list[dict[str, float]] = field(default_factory=list)

    def rps(self) -> float:
        requests = sum(r.get("requests", 0.0) for r in self.runs)
        seconds = sum(r.get("seconds", 0.0) for r in self.runs)
        if requests and seconds:
            return requests / seconds
        return statistics.fmean(r["rps"] for r in self.runs)

    def median(self, name: str) -> float | None:
        values = [r[name] for r in self.runs if name in r]
        return statistics.median(values) if values else None

    def total(self, name: str) -> int:
        return int(sum(r.get(name, 0.0) for r in self.runs))

    def spread(self, name: str) -> str:
        values = [r[name] for r in self.runs if name in r]
        return "/".join(f"{v:.3g}" for v in values)


def run_wrk(gen: list[str], wrk: str, url: str, script: Path, *, connections: int,
            seconds: int) -> dict[str, float]:
    cmd = [*gen, wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    parsed = parse_wrk(out)
    if "rps" not in parsed:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    return parsed


def run_hey(gen: list[str], hey: str, url: str, request: dict, *, connections: int,
            seconds: int, rate: float) -> dict[str, float]:
    cmd = [*gen, hey, "-z", f"{seconds}s", "-c", str(connections),
           "-q", f"{rate / connections:.4f}", "-m", request["method"]]
    for header in request["headers"]:
        cmd += ["-H", header]
    if request.get("body") is not None:
        cmd += ["-T", "application/json", "-d", request["body"]]
    out = subprocess.run([*cmd, url + request["path"]], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    parsed = parse_hey(out)
    if "p99" not in parsed:
        raise RuntimeError(f"could not parse hey output:\n{out}")
    return parsed


def interleave(rounds: int, measure_a, measure_b) -> tuple[Rounds, Rounds]:
    """A B, B A, A B ...: each server sees the same mix of early and late machine load."""
    a, b = Rounds(), Rounds()
    for i in range(rounds):
        order = ((a, measure_a), (b, measure_b))
        for into, measure in (order if i % 2 == 0 else order[::-1]):
            into.runs.append(measure())
    return a, b


def server_env(dsn: str) -> dict[str, str]:
    """The environment both servers run with: the database, JSON logs at INFO (the API's
    access lines included) and the same pool size (PLATEREG_BENCH_API_POOL, 16)."""
    return {**os.environ, "PLATEREG_DATABASE_URL": dsn, "PLATEREG_LOG_FORMAT": "json",
            "PLATEREG_LOG_LEVEL": "INFO", "PLATEREG_DB_POOL_MIN": "2",
            "PLATEREG_DB_POOL_MAX": os.environ.get("PLATEREG_BENCH_API_POOL", "16")}


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def _single_shape(url: str) -> str:
    """``post`` when the API serves single lookups as POST /v1/plates/query, else ``get``."""
    paths = httpx.get(f"{url}/openapi.json", timeout=30).json().get("paths", {})
    return "post" if "/v1/plates/query" in paths else "get"


def _hey_request(shape: str, key: str, plate: str) -> dict:
    auth = f"Authorization: Bearer {key}"
    if shape == "post":
        body = orjson.dumps({"jurisdiction": JURISDICTION, "plate": plate,
                             "purpose": "testing"}).decode()
        return {"method": "POST", "path": "/v1/plates/query", "headers": [auth], "body": body}
    return {"method": "GET", "path": f"/v1/plates/{JURISDICTION}/{plate}",
            "headers": [auth, "X-Purpose: bench"], "body": None}


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


def _audit_drained(url: str, timeout: float = 60.0) -> None:
    """Wait (at most ``timeout``) until the API has written every buffered audit row, so
    that a batch run does not start behind the previous run's backlog (and its 503s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        m = re.search(r"^platereg_audit_backlog ([\d.e+]+)$", text, re.M)
        if m is None or float(m.group(1)) == 0:
            return
        time.sleep(0.5)


async def _audit_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM audit_log")
    finally:
        await conn.close()


def run(ctx: BenchContext) -> list[Figure]:
    n = int(os.environ.get("PLATEREG_BENCH_API_PLATES", 50_000 if ctx.quick else 1_000_000))
    seconds = int(os.environ.get("PLATEREG_BENCH_API_SECONDS", "6" if ctx.quick else "24"))
    rounds = int(os.environ.get("PLATEREG_BENCH_API_ROUNDS", "2" if ctx.quick else "3"))
    each = max(2, seconds // rounds)
    connections = int(os.environ.get("PLATEREG_BENCH_API_CONNECTIONS", "64"))
    workers = int(os.environ.get("PLATEREG_BENCH_API_WORKERS", "1"))
    rate = float(os.environ.get("PLATEREG_BENCH_API_RATE", "2000"))
    wrk = find_or_install("wrk", "wrk", who="bench_api")
    hey = find_or_install("hey", "hey", who="bench_api")
    if wrk is None:
        print("bench_api: SKIPPED: the load generator wrk is not installed "
              "(Debian/Ubuntu: apt-get install -y wrk)", file=sys.stderr)
        return [Figure(NAME, "single lookups", 0, "req/s", notes="SKIPPED: wrk not installed")]

    dsn = asyncio.run(ctx.fresh_database())
    ctx.settings(dsn)
    key, load_s = asyncio.run(_prepare(dsn, n))
    print(f"bench_api: loaded {n:,} plates in {load_s:.1f} s", file=sys.stderr)
    work = ctx.work_dir / "bench_api"
    work.mkdir(exist_ok=True)
    env = server_env(dsn)
    server_pin, gen = pinning()
    batch_lua = work / "batch.lua"
    batch_lua.write_text(BATCH_LUA.format(n=n, key=key, seed=2))

    before = asyncio.run(_audit_rows(dsn))
    base_port, api_port = free_port(), free_port()
    base_proc = _serve([*server_pin, sys.executable, "-m", "uvicorn", "bench.api_baseline:app",
                        "--port", str(base_port), "--workers", str(workers), "--no-access-log",
                        "--log-level", "warning"], env, base_port, work / "baseline.log")
    api_proc = None
    try:
        api_proc = _serve([*server_pin, sys.executable, "-m", "wiring.cli", "serve",
                           "registry", "--port", str(api_port), "--workers", str(workers)],
                          env, api_port, work / "api.log")
        base_url, api_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{api_port}"
        shape = _single_shape(api_url)
        single_lua = work / "single.lua"
        single_lua.write_text((SINGLE_POST_LUA if shape == "post" else SINGLE_GET_LUA)
                              .format(n=n, key=key, seed=1))

        def closed(url: str):
            return lambda: run_wrk(gen, wrk, url, single_lua, connections=connections,
                                   seconds=each)

        for url in (base_url, api_url):  # warm-up: connections, prepared statements
            run_wrk(gen, wrk, url, single_lua, connections=connections, seconds=2)
        api, base = interleave(rounds, closed(api_url), closed(base_url))
        fixed_api = fixed_base = None
        if hey is not None:
            request = _hey_request(shape, key, _plate(n // 2))

            def fixed(url: str):
                return lambda: run_hey(gen, hey, url, request, connections=connections,
                                       seconds=each, rate=rate)

            fixed_base, fixed_api = interleave(rounds, fixed(base_url), fixed(api_url))
        _audit_drained(api_url)
        batch1 = run_wrk(gen, wrk, api_url, batch_lua, connections=1, seconds=max(3, each))
        _audit_drained(api_url)
        batch4 = run_wrk(gen, wrk, api_url, batch_lua, connections=4, seconds=max(3, each))
    finally:
        stop_process(base_proc, signal.SIGTERM, 30)
        # SIGTERM: the API flushes its audit buffer before exiting
        stop_process(api_proc, signal.SIGTERM, 30)
    audited = asyncio.run(_audit_rows(dsn)) - before
    log_lines = (work / "api.log").read_text(errors="replace").count("\n")
    return _figures(api, base, fixed_api, fixed_base, batch1, batch4, audited, log_lines,
                    note=(f"{rounds} interleaved rounds x {each}s, {connections} connections, "
                          f"{n:,} plates, {workers} worker(s), pool {env['PLATEREG_DB_POOL_MAX']}"
                          f", {shape.upper()} single lookups"
                          + (", wrk/hey pinned to their own core" if gen else "")),
                    rate=rate)


def _figures(api: Rounds, base: Rounds, fixed_api: Rounds | None, fixed_base: Rounds | None,
             batch1: dict, batch4: dict, audited: int, log_lines: int, *, note: str,
             rate: float) -> list[Figure]:
    bare = "bare Starlette+asyncpg, like for like"
    errors = f"; non-2xx: {api.total('non2xx')}" if api.total("non2xx") else ""
    figures = [
        Figure(NAME, "single lookups, closed loop (wrk)", api.rps(), "req/s", base.rps(), bare,
               ">= 0.8x baseline", f"{note}; rounds {api.spread('rps')} vs "
               f"{base.spread('rps')}{errors}"),
        Figure(NAME, "single lookup p50, closed loop", api.median("p50") or 0, "ms",
               base.median("p50"), bare, "", "median of the rounds", better="lower"),
        Figure(NAME, "single lookup p99, closed loop", api.median("p99") or 0, "ms",
               base.median("p99"), bare, "", f"rounds {api.spread('p99')} vs "
               f"{base.spread('p99')}", better="lower"),
    ]
    if fixed_api is not None and fixed_base is not None:
        bad = fixed_api.total("non2xx") + fixed_api.total("errors")
        figures.append(Figure(
            NAME, f"single lookup p99 at {rate:,.0f} req/s (hey -q)",
            fixed_api.median("p99") or 0, "ms", fixed_base.median("p99"), bare,
            "<= 1.5x baseline", f"achieved {fixed_api.rps():,.0f} vs {fixed_base.rps():,.0f} "
            f"req/s; rounds {fixed_api.spread('p99')} vs {fixed_base.spread('p99')}; one plate"
            + (f"; non-2xx/errors: {bad}" if bad else ""), better="lower"))
    else:
        figures.append(Figure(NAME, f"single lookup p99 at {rate:,.0f} req/s (hey -q)", 0,
                              "ms", notes="SKIPPED: hey not installed (apt-get install hey)"))
    for label, b, conns in (("1 at a time", batch1, 1), ("4 concurrent", batch4, 4)):
        figures.append(Figure(
            NAME, f"batch of 1,000 p50 ({label})", b["p50"], "ms", None, "",
            "<= 40 ms" if conns == 4 else "", f"wrk -t1 -c{conns}, {b['rps']:.1f} batches/s, "
            f"p99 {b['p99']:.1f} ms" + (f"; non-2xx (503: the audit log behind): "
                                        f"{int(b['non2xx'])} of {int(b.get('requests', 0))}"
                                        if b["non2xx"] else ""),
            better="lower"))
    figures.append(Figure(NAME, "audit rows written", audited, "rows", None, "", "",
                          f"requests sent incl. warm-up; api log lines: {log_lines}"))
    return figures
