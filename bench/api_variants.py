"""python -m bench.api_variants TREE [TREE ...]: the registry API's CPU time per single
lookup, from several source trees at once, beside the bare baseline.

To tell which change moved the single-lookup ratio of ``python -m bench api``: one
PostgreSQL database (bulk-loaded as the API bench loads it), the bare baseline
(``bench/api_baseline.py``) and one ``platereg serve registry`` per source tree (a git
worktree of another commit: it runs with ``PYTHONPATH`` and the working directory set to
the tree, this checkout's virtual environment), all running at once. ``wrk`` (the API
bench's Lua script) loads each server in turn for ``--seconds``, the order reversed
every other round, and the server process's CPU time (``/proc/<pid>/stat``: user +
system) over the round is divided by the requests it answered. CPU per request moves
less with a shared machine's load than requests per second do; both are printed, as the
median of the rounds with every round beside it. ``--batch`` sends 1,000-plate batches
over 4 connections instead of single lookups over 64.

A tree must accept this checkout's database schema (a commit too far back may not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import bench_api
from bench.common import BenchContext, Servers
from devtools.debian_tools import find_or_install
from devtools.embedded import free_port, stop_process


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(name: str, argv: list[str], env: dict[str, str], cwd: Path,
           work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        proc = bench_api._serve([*argv, "--port", str(port)], env, port, work / f"{name}.log")
    finally:
        os.chdir(old)
    return proc, port


def _rounds(servers: dict[str, tuple[subprocess.Popen, int]], load: Callable[[str], dict],
            rounds: int, seconds: int) -> dict[str, list[tuple[float, float, float]]]:
    """(req/s, CPU us per request, p50 ms) of each server, each round."""
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    names = list(servers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            proc, port = servers[name]
            before = cpu_seconds(proc.pid)
            out = load(f"http://127.0.0.1:{port}")
            used = cpu_seconds(proc.pid) - before
            results[name].append((out["rps"], 1e6 * used / (out["rps"] * seconds),
                                  out.get("p50", 0.0)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (git worktrees)")
    parser.add_argument("--plates", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--batch", action="store_true", help="1,000-plate batches, 4 at once")
    args = parser.parse_args(argv)
    wrk = find_or_install("wrk", "wrk", who="bench.api_variants")
    if wrk is None:
        print("bench.api_variants: wrk is not installed (apt-get install -y wrk)",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="api-variants-"))
    with Servers(work) as (admin_dsn, bootstrap):
        ctx = BenchContext(admin_dsn=admin_dsn, bootstrap=bootstrap, work_dir=work)
        dsn = asyncio.run(ctx.fresh_database())
        ctx.settings(dsn)
        key, _ = asyncio.run(bench_api._prepare(dsn, args.plates))
        env = bench_api.server_env(dsn)
        pin, gen = bench_api.pinning()
        script = work / "load.lua"
        lua = bench_api.BATCH_LUA if args.batch else bench_api.SINGLE_POST_LUA
        script.write_text(lua.format(n=args.plates, key=key, seed=1))
        connections = 4 if args.batch else 64
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            servers["bare"] = _start("bare", [*pin, sys.executable, "-m", "uvicorn",
                                              "bench.api_baseline:app", "--no-access-log",
                                              "--log-level", "warning"], env, Path.cwd(), work)
            for tree in args.trees:
                servers[tree.name] = _start(
                    tree.name, [*pin, sys.executable, "-m", "wiring.cli", "serve", "registry"],
                    {**env, "PYTHONPATH": str(tree.resolve())}, tree, work)

            def load(url: str, seconds: int = args.seconds) -> dict:
                return bench_api.run_wrk(gen, wrk, url, script, connections=connections,
                                         seconds=seconds)

            for _, port in servers.values():   # warm-up: connections, prepared statements
                load(f"http://127.0.0.1:{port}", 2)
            results = _rounds(servers, load, args.rounds, args.seconds)
        finally:
            for proc, _ in servers.values():
                stop_process(proc, signal.SIGTERM, 30)
    shape = "batches of 1,000, 4 connections" if args.batch else "single lookups, 64 connections"
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.seconds} s, "
          f"{shape}")
    for name, rows in results.items():
        rps, us, p50 = zip(*rows, strict=True)
        print(f"{name:16s} {statistics.median(rps):8,.0f} req/s  CPU "
              f"{statistics.median(us):8.1f} us/request ({', '.join(f'{u:.0f}' for u in us)})"
              f"  p50 {statistics.median(p50):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
