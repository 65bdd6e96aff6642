"""python -m bench scale [--factors 1,4,16]: the consumer's and the lookup API's figures as
the work grows, in one table.

At factor ``f`` the registry holds ``100,000 x f`` plates:

* **consumer**: ``400,000 x f`` realistic events (four per plate, made as they are
  produced: :func:`bench.bench_consumer.iter_events`) replayed by ``platereg consume
  registry`` from an empty registry, beside the bare aiokafka -> COPY baseline on the same
  topic, then the live phase's apply latency (as ``make bench``'s consumer figures);
* **lookups**: ``bench.bench_api`` on ``100,000 x f`` bulk-loaded plates (single lookups
  closed loop and at a fixed rate, batches of 1,000), as in ``make bench``.

Each factor's databases are dropped once measured (their disk and their autovacuum would
weigh on the next factor). The load average (``/proc/loadavg``, 1 minute) is read before
and after each part and printed in the table: the machine may be shared. The table goes
to stdout, the figures to ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import bench_api, bench_consumer
from bench.common import BenchContext, Figure, Servers
from platereg.db import connection

BASE_PLATES = 100_000
EVENTS_PER_PLATE = 4
DEFAULT_FACTORS = (1, 4, 16)
#: The rows of the table: (bench, metric) of the figures kept at every factor.
ROWS = (
    ("consumer", "throughput after first commit"),
    ("consumer", "replay throughput"),
    ("consumer", "peak RSS"),
    ("consumer", "apply latency p99 (live)"),
    ("consumer", "load average (1 min), before / after"),
    ("api", "single lookups, closed loop (wrk)"),
    ("api", "single lookup p50, closed loop"),
    ("api", "single lookup p99, closed loop"),
    ("api", "single lookup p99 at 2,000 req/s (hey -q)"),
    ("api", "batch of 1,000 p50 (1 at a time)"),
    ("api", "batch of 1,000 p50 (4 concurrent)"),
    ("api", "load average (1 min), before / after"),
)
LOAD = "load average (1 min), before / after"


def load_average() -> float:
    """The 1-minute load average of the machine."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def cell(figure: Figure | None) -> str:
    """A figure's table cell: value and unit, its same-run baseline's ratio when it has one."""
    if figure is None:
        return "-"
    if figure.metric == LOAD:
        return figure.notes
    text = f"{_fmt(figure.value)} {figure.unit}"
    if figure.ratio is not None and figure.baseline_name:
        text += f" ({figure.ratio:.2f} of bare)"
    return text


def held(first: Figure | None, last: Figure | None) -> str:
    """The largest factor's value over the smallest's, as ``x1.23`` (``-`` when unknown)."""
    if first is None or last is None or not first.value or first.metric == LOAD:
        return "-"
    return f"x{last.value / first.value:.2f}"


def scale_rows(results: dict[int, list[Figure]]) -> list[list[str]]:
    """One row per :data:`ROWS` entry: bench, metric, a cell per factor (ascending), and the
    largest factor's value over the smallest's."""
    factors = sorted(results)
    by_key = {f: {fig.key: fig for fig in results[f]} for f in factors}
    rows = []
    for bench, metric in ROWS:
        key = f"{bench}: {metric}"
        found = [by_key[f].get(key) for f in factors]
        if all(fig is None for fig in found):
            continue
        rows.append([bench, metric, *(cell(fig) for fig in found),
                     held(found[0], found[-1]) if len(factors) > 1 else "-"])
    return rows


def _loads(bench: str, before: float, after: float) -> Figure:
    return Figure(bench, LOAD, 0.0, "", notes=f"{before:.2f} / {after:.2f}")


async def _drop_databases(ctx: BenchContext) -> None:
    async with connection(ctx.admin_dsn) as conn:
        for name in ctx._dbs:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ctx._dbs.clear()


async def _consumer(ctx: BenchContext, plates: int) -> list[Figure]:
    """The consumer's figures over ``plates`` plates (four events each)."""
    n = plates * EVENTS_PER_PLATE
    rate = 1000.0
    dsn, settings, ends, produce_s, base_s = await bench_consumer._setup(
        ctx, bench_consumer.iter_events(n))
    print(f"scale: {n:,} events produced in {produce_s:.0f} s, load {load_average():.2f}",
          file=sys.stderr, flush=True)
    total, first, rss, p99 = await bench_consumer._registry(
        settings, dsn, ends, os.environ.get("BENCH_CONSUMER_ARGS", "").split(),
        live=(int(rate * 5), rate))
    async with connection(dsn) as conn:
        stored = await conn.fetchval("SELECT count(*) FROM plate_events")
        kept = await conn.fetchval("SELECT count(*) FROM plates")
    if stored < n * 0.9:
        raise RuntimeError(f"only {stored:,} of {n:,} events were stored")
    return bench_consumer._figures(n, total, first, rss, p99, base_s, produce_s, rate,
                                   f"{n:,} events, {stored:,} stored, {kept:,} plates")


def measure(ctx: BenchContext, plates: int) -> list[Figure]:
    """Every figure at ``plates`` plates, the load average around each part."""
    figures: list[Figure] = []
    before = load_average()
    figures += asyncio.run(_consumer(ctx, plates))
    figures.append(_loads("consumer", before, load_average()))
    asyncio.run(_drop_databases(ctx))
    os.environ["PLATEREG_BENCH_API_PLATES"] = str(plates)
    before = load_average()
    figures += bench_api.run(ctx)
    figures.append(_loads("api", before, load_average()))
    asyncio.run(_drop_databases(ctx))
    return figures


def print_table(results: dict[int, list[Figure]], broker: str, base: int) -> None:
    factors = sorted(results)
    table = Table(title=f"Plate Registry as the work grows, on {broker}")
    table.add_column("bench")
    table.add_column("metric")
    for f in factors:
        table.add_column(f"{f}x: {base * f:,} plates", justify="right")
    table.add_column(f"{factors[-1]}x / {factors[0]}x", justify="right")
    for row in scale_rows(results):
        table.add_row(*row)
    Console(width=220).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--factors", default=",".join(map(str, DEFAULT_FACTORS)),
                        help="plates in multiples of --base (default 1,4,16)")
    parser.add_argument("--base", type=int, default=BASE_PLATES,
                        help="plates at 1x (default 100,000; smaller for a smoke run)")
    args = parser.parse_args(argv)
    factors = sorted({int(f) for f in args.factors.split(",")})
    work = Path(tempfile.mkdtemp(prefix="platereg-scale-"))
    results: dict[int, list[Figure]] = {}
    started = time.time()
    servers = Servers(work)
    failed = False
    try:
        with servers as (dsn, bootstrap):
            ctx = BenchContext(admin_dsn=dsn, bootstrap=bootstrap, work_dir=work)
            for factor in factors:
                print(f"scale: {factor}x ({args.base * factor:,} plates) ...",
                      file=sys.stderr, flush=True)
                try:
                    results[factor] = measure(ctx, args.base * factor)
                except Exception as exc:  # noqa: BLE001 - the smaller factors still print
                    print(f"scale: {factor}x failed: {exc!r}", file=sys.stderr)
                    failed = True
                    break
                _write(results, servers.broker, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if results:
        print_table(results, servers.broker, args.base)
    return 1 if failed else 0


def _write(results: dict[int, list[Figure]], broker: str, started: float) -> None:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps({
        "started": started, "duration_s": time.time() - started, "broker": broker,
        "factors": {str(f): [fig.as_dict() for fig in figs] for f, figs in results.items()},
    }, indent=2))
