"""python -m bench.http_clients [N] [ROUNDS]: the notice dispatcher's HTTP delivery path with
each candidate client, without the database or the broker.

The bare loops of ``bench.bench_notices`` (workers posting signed notice-sized bodies to its
keep-alive sink, in its own process) at the dispatcher's default concurrency and at the
benchmark's, each client in turn; for each the table gives requests/s and this process's
CPU per request (user + system), the median of interleaved rounds. CPU per request is the
figure that holds on a shared machine: the sink's share of the cores varies from round to
round. The choice it informs is written down in docs/benchmarks.md.
"""

from __future__ import annotations

import resource
import statistics
import sys

import uvloop

from bench.bench_notices import _bare_loop, _sink_process

CLIENTS = ("aiohttp", "httpx")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _round(url: str, n: int, client: str, concurrency: int) -> tuple[float, float]:
    c0 = _cpu()
    rate = await _bare_loop(url, n, client, concurrency)
    return rate, (_cpu() - c0) / n * 1e6


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
            results: dict[str, list[tuple[float, float]]] = {c: [] for c in CLIENTS}
            for _ in range(rounds):
                for client in CLIENTS:
                    results[client].append(await _round(url, n, client, concurrency))
            for client, runs in results.items():
                rate = statistics.median(r for r, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                each = " / ".join(f"{r:,.0f}" for r, _ in runs)
                print(f"{client:8} {concurrency:>9} {rate:>9,.0f} {cpu:>11,.0f}  {each}")


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
                     int(sys.argv[2]) if len(sys.argv) > 2 else 3))
