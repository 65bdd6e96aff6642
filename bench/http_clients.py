"""python -m bench.http_clients [N] [ROUNDS]: the notice dispatcher's HTTP delivery path with
each candidate client, without the database or the broker.

Workers (the dispatcher's default concurrency, then the benchmark's) post signed
notice-sized bodies to the keep-alive sink of ``bench.bench_notices`` in its own process;
for each client the table gives requests/s and this process's CPU per request (user +
system), the median of interleaved rounds. CPU per request is the figure that holds on a
shared machine: the sink's share of the cores varies from round to round. The choice it
informs is written down in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import time
import uuid

import aiohttp
import orjson
import uvloop

from bench.bench_notices import _sink_process
from notifications.channels import sign

BODY = orjson.dumps({"notice_id": str(uuid.uuid4()), "kind": "renewed",
                     "jurisdiction": "CA-ON", "plate": "B1", "owner_id": "own-1",
                     "language": "en", "channels": ["webhook", "paper"],
                     "created_at": "2026-01-01T00:00:00Z",
                     "context": {"expires_on": "2030-01-01"}})


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": "k:webhook",
            "X-Signature": sign(BODY, ["bench-secret"])}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _aiohttp(url: str, n: int, concurrency: int) -> tuple[float, float]:
    left = n
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url + "/hook", data=BODY, headers=_headers(),
                                        allow_redirects=False) as r:
                    await r.read()

        c0, t0 = _cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0), (_cpu() - c0) / n * 1e6


async def _httpx(url: str, n: int, concurrency: int) -> tuple[float, float]:
    import httpx  # the development extra's client, measured here against aiohttp

    left = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.post(url + "/hook", content=BODY, headers=_headers())

        c0, t0 = _cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0), (_cpu() - c0) / n * 1e6


async def _main(n: int, rounds: int) -> None:
    try:
        import sniffio  # noqa: F401
        note = "sniffio installed"
    except ImportError:
        note = "sniffio absent"
    print(f"{n:,} POSTs per round, {rounds} interleaved rounds, {note}")
    print(f"{'client':8} {'in flight':>9} {'req/s':>9} {'us CPU/req':>11}  rounds (req/s)")
    with _sink_process(0.0) as url:
        for concurrency in (32, 64):
            results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpx": []}
            for _ in range(rounds):
                results["aiohttp"].append(await _aiohttp(url, n, concurrency))
                results["httpx"].append(await _httpx(url, n, concurrency))
            for name, runs in results.items():
                rate = statistics.median(r for r, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                each = " / ".join(f"{r:,.0f}" for r, _ in runs)
                print(f"{name:8} {concurrency:>9} {rate:>9,.0f} {cpu:>11,.0f}  {each}")


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
                     int(sys.argv[2]) if len(sys.argv) > 2 else 3))
