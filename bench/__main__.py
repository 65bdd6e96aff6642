"""python -m bench [--quick] [NAME ...]: run the benchmarks and print the table."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench
from bench.common import BenchContext, Figure, Servers
from platereg.logging import configure_logging

warnings.filterwarnings("ignore", module="platformdirs")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args(argv)
    configure_logging("console", "WARNING")

    modules = sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                     if m.name.startswith("bench_"))
    if args.names:
        modules = [m for m in modules if m in args.names or m.removeprefix("bench_") in args.names]
    work = Path(tempfile.mkdtemp(prefix="platereg-bench-"))
    figures: list[Figure] = []
    started = time.time()
    try:
        with Servers(work) as (dsn, bootstrap):
            ctx = BenchContext(admin_dsn=dsn, bootstrap=bootstrap, work_dir=work,
                               quick=args.quick)
            for name in modules:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                module = importlib.import_module(f"bench.{name}")
                figures.extend(module.run(ctx))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title="Plate Registry benchmarks (same-run baselines)")
    for col in ("bench", "metric", "value", "unit", "baseline", "ratio", "target", "notes"):
        table.add_column(col, justify="right" if col in ("value", "baseline", "ratio") else "left")
    for f in figures:
        baseline = f"{_fmt(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-"
        table.add_row(f.bench, f.metric, _fmt(f.value), f.unit, baseline,
                      f"{f.ratio:.2f}" if f.ratio is not None else "-", f.target, f.notes)
    Console(width=200).print(table)

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    result = {
        "started": started, "duration_s": time.time() - started, "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "figures": [f.as_dict() for f in figures],
    }
    (out / "latest.json").write_text(json.dumps(result, indent=2))
    print(f"results written to {out / 'latest.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
