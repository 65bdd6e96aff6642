"""python -m bench [--quick] [--write-baseline] [NAME ...]: run the benchmarks and print
the table. ``python -m bench scale [--factors 1,4,16]``: the consumer's and the lookup
API's figures as the work grows (``bench/scale.py``).

Each ratio (value / same-run baseline) is compared with ``bench/baseline.json``
(ratios only, checked in): a ratio more than 30 % worse than its reference is
marked ``REGRESSED`` in the table and in ``bench/results/latest.json``, and the
run exits 3 (not with ``--quick``: smaller sizes have other ratios, so a smoke
run shows the references without marks). ``--write-baseline`` stores this run's
ratios as the new reference (full runs only)."""

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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:   # the figures as the work grows: bench/scale.py
        from bench import scale

        return scale.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--write-baseline", action="store_true",
                        help="store this run's ratios in bench/baseline.json")
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
        servers = Servers(work)
        with servers as (dsn, bootstrap):
            print(f"broker: {servers.broker}", file=sys.stderr, flush=True)
            ctx = BenchContext(admin_dsn=dsn, bootstrap=bootstrap, work_dir=work,
                               quick=args.quick, reference=servers.reference())
            for name in modules:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                module = importlib.import_module(f"bench.{name}")
                figures.extend(module.run(ctx))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = load_reference()
    # Quick sizes have other ratios: a smoke run shows the references but marks nothing.
    regressions = [] if args.quick else [f.key for f in figures
                                         if f.regressed(reference.get(f.key))]
    table = Table(title=f"Plate Registry benchmarks on {servers.broker} (same-run baselines)")
    for col in ("bench", "metric", "value", "unit", "baseline", "ratio", "ref. ratio", "target",
                "notes"):
        table.add_column(col, justify="right" if col in ("value", "baseline", "ratio",
                                                          "ref. ratio") else "left")
    for f in figures:
        baseline = f"{_fmt(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-"
        ref = reference.get(f.key)
        mark = f"{ref:.2f}" if ref is not None else "-"
        if f.key in regressions:
            mark += " REGRESSED"
        table.add_row(f.bench, f.metric, _fmt(f.value), f.unit, baseline,
                      f"{f.ratio:.2f}" if f.ratio is not None else "-", mark, f.target,
                      f.notes)
    Console(width=220).print(table)
    if regressions:
        print(f"REGRESSED (ratio > 30 % worse than bench/baseline.json): "
              f"{', '.join(regressions)}", file=sys.stderr)

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    result = {
        "started": started, "duration_s": time.time() - started, "quick": args.quick,
        "broker": servers.broker,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "figures": [{**f.as_dict(), "reference_ratio": reference.get(f.key),
                     "regressed": f.key in regressions} for f in figures],
        "regressions": regressions,
    }
    (out / "latest.json").write_text(json.dumps(result, indent=2))
    print(f"results written to {out / 'latest.json'}", file=sys.stderr)
    if args.write_baseline:
        if args.quick:
            print("--write-baseline ignored with --quick", file=sys.stderr)
        else:
            write_reference(reference, figures)
    return 3 if regressions else 0


BASELINE_FILE = Path(__file__).parent / "baseline.json"


def load_reference(path: Path = BASELINE_FILE) -> dict[str, float]:
    """Reference ratios by figure key (``bench: metric``); empty when there is no file."""
    if not path.exists():
        return {}
    return {k: float(v) for k, v in json.loads(path.read_text())["ratios"].items()}


def write_reference(reference: dict[str, float], figures: list[Figure],
                    path: Path = BASELINE_FILE) -> None:
    ratios = {**reference, **{f.key: round(f.ratio, 4) for f in figures
                              if f.ratio is not None}}
    path.write_text(json.dumps({
        "about": "Reference ratios (value / same-run baseline) of `make bench`; a run whose "
                 "ratio is more than 30 % worse is marked REGRESSED. Ratios only: absolute "
                 "numbers depend on the machine. Update with `python -m bench "
                 "--write-baseline` after a deliberate change.",
        "ratios": dict(sorted(ratios.items()))}, indent=2) + "\n")
    print(f"reference ratios written to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
