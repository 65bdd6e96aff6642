"""The developer commands: ``platereg run``, ``platereg logs``, ``platereg demo``,
``platereg simulate`` and ``platereg notices mail-catcher``.

The CLI root (``wiring.cli``) registers them next to the services' commands; no
service imports this package.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from platereg.commands import PRODUCER_HELP, fail, settings_or_exit, with_producer

SIMULATE_HELP = """Generate realistic registry traffic to Kafka, the ingest API or an NDJSON file.

Plates are issued, renewed (mostly on time, some late), suspended and
reinstated, reported stolen and recovered, transferred, updated, cancelled,
paired with smart plate devices. A fixed --seed gives the same stream, byte for byte; times
then start at --start (default 2025-01-01T00:00:00Z), never at the wall clock.
Without --seed a random one is used (and printed) and the window ends now.
Memory grows with --plates (a few KB each), not with the number of events.
To Kafka, every message is signed as the registered producer PLATEREG_PRODUCER_NAME
(or --producer) with PLATEREG_PRODUCER_SECRET.
"""


def run(
    demo: Annotated[bool | None, typer.Option(
        "--demo/--no-demo",
        help="Load simulated demo data and make a demo operator key (default: only when "
             "both servers are embedded)")] = None,
    reset: Annotated[bool, typer.Option(
        "--reset", help="Start from an empty data directory (PLATEREG_DATA_DIR): the "
                        "embedded servers' data, demo data and keys are deleted first")] = False,
    status_every: Annotated[float, typer.Option(
        min=0, help="Seconds between status lines when the output is not a terminal "
                    "(0: none); a terminal gets a status block redrawn in place")] = 30.0,
) -> None:
    """Start everything locally (embedded servers unless PLATEREG_* URLs are set). Ctrl-C stops.

    The services' logs go to PLATEREG_DATA_DIR/logs (`platereg logs`).
    """
    from devtools.runner import StackError, reset_data_dir, run_stack

    settings = settings_or_exit()
    if reset:
        try:
            reset_data_dir(settings)
        except StackError as exc:
            raise fail(str(exc), 2) from None
    raise typer.Exit(run_stack(settings, demo=demo, status_every=status_every))


def logs(
    service: Annotated[str | None, typer.Argument(
        help="A service of `platereg run` (none: list them)")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing what is added, across restarts (Ctrl-C ends)")]
    = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0,
                                       help="How many of the last lines to print first")] = 50,
) -> None:
    """The logs of `platereg run`'s services (PLATEREG_DATA_DIR/logs, this run's and the
    previous run's as SERVICE.log.1)."""
    import sys

    from devtools import runlogs

    settings = settings_or_exit()
    directory = runlogs.logs_dir(settings.data_dir)
    names = runlogs.available(directory)
    if service is None:
        if not names:
            raise fail(f"no logs in {directory} (`platereg run` writes them)", 1)
        for name in names:
            size = runlogs.log_path(directory, name).stat().st_size
            typer.echo(f"{name}\t{size:,} bytes")
        return
    if service not in names and not follow:
        raise fail(f"no log of {service!r} in {directory}; there are: "
                   f"{', '.join(names) or 'none'}", 1)

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()

    path = runlogs.log_path(directory, service)
    if not follow:
        with open(path, "rb") as f:
            for line in runlogs.last_lines(f, lines):
                write(line)
        return
    try:
        runlogs.follow(path, write, lines=lines)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def demo() -> None:
    """Print the demo keys and curl commands of the running `platereg run` (demo.txt in
    PLATEREG_DATA_DIR; gone once it stops, when its keys are revoked)."""
    from devtools.runner import demo_file

    settings = settings_or_exit()
    try:
        typer.echo(demo_file(settings).read_text(), nl=False)
    except FileNotFoundError:
        raise fail("no demo running: `make run` (with demo data) writes "
                   f"{demo_file(settings)} and deletes it when it stops", 1) from None


def _simulated_start(start: str | None, seed: int | None, span: timedelta) -> datetime:
    """Where simulated time begins: ``--start``, the seeded default, or now minus the span."""
    from devtools import simulate as sim

    now = datetime.now(UTC)
    if start is not None:
        try:
            begin = datetime.fromisoformat(start)
        except ValueError:
            raise fail("--start must be RFC 3339, e.g. 2025-01-01T00:00:00Z", 2) from None
        if begin.tzinfo is None:
            raise fail("--start needs a UTC offset, e.g. 2025-01-01T00:00:00Z", 2)
    elif seed is not None:
        begin = sim.DEFAULT_SEEDED_START
    else:
        begin = (now - span).replace(second=0, microsecond=0)
    if begin + span > now + timedelta(minutes=5):
        raise fail("the simulated window ends in the future, so the registry would reject "
                   "its events as future_time; use an earlier --start or a shorter --duration",
                   2)
    return begin


def _simulation_sink(settings: Any, to: str, output: str, api: str | None,
                     key: str | None) -> Any:
    """Where ``platereg simulate --to`` sends the stream."""
    from devtools import simulate as sim
    from platereg.settings import ConfigError

    if to == "file":
        return sim.FileSink(output)
    if to == "kafka":
        try:
            settings.bootstrap()
            return sim.KafkaSink(settings)
        except ConfigError as exc:
            raise fail(str(exc), 2) from None
    if to == "api":
        if not api or not key:
            raise fail("--to api needs --api URL and --key (or PLATEREG_API_KEY)", 2)
        return sim.ApiSink(api, key)
    raise fail("--to must be kafka, api or file", 2)


def simulate_command(
    plates: Annotated[int, typer.Option(min=1, max=2_000_000, help="Number of plates")] = 1000,
    events: Annotated[int | None, typer.Option(
        min=0, help="Stop after this many messages (default: the whole duration)")] = None,
    duration: Annotated[str, typer.Option(
        help="Simulated time span, e.g. 90d, 12h, 2w")] = "365d",
    start: Annotated[str | None, typer.Option(
        help="Start of simulated time (RFC 3339); default 2025-01-01T00:00:00Z with --seed, "
             "else now minus --duration")] = None,
    rate: Annotated[float, typer.Option(
        min=0, help="Messages per second of real time (0: as fast as possible)")] = 0.0,
    late_share: Annotated[float, typer.Option(
        min=0, max=1, help="Share of events delivered late (out of order)")] = 0.0,
    duplicate_share: Annotated[float, typer.Option(
        min=0, max=1, help="Share of messages that re-send an earlier event")] = 0.0,
    invalid_share: Annotated[float, typer.Option(
        min=0, max=1, help="Share of invalid messages")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible stream")] = None,
    to: Annotated[str, typer.Option(help="kafka, api or file")] = "kafka",
    output: Annotated[str, typer.Option(help="NDJSON file for --to file ('-': stdout)")] = "-",
    api: Annotated[str | None, typer.Option(help="Ingest API URL for --to api")] = None,
    key: Annotated[str | None, typer.Option(
        envvar="PLATEREG_API_KEY", help="API key (role ingest) for --to api")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress")] = True,
    producer: Annotated[str | None, typer.Option(
        help=PRODUCER_HELP, show_default="PLATEREG_PRODUCER_NAME")] = None,
) -> None:
    from devtools import simulate as sim

    settings = with_producer(settings_or_exit(), producer)
    try:
        span = sim.parse_duration(duration)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    begin = _simulated_start(start, seed, span)
    used_seed = seed if seed is not None else secrets.randbelow(2**31)
    try:
        config = sim.SimConfig(plates=plates, start=begin, duration=span, events=events,
                               late_share=late_share, duplicate_share=duplicate_share,
                               invalid_share=invalid_share, seed=used_seed)
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    sink = _simulation_sink(settings, to, output, api, key)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    show = progress and err.is_terminal and not (to == "file" and output == "-")
    bar = Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, disable=not show)
    task = bar.add_task("simulate", total=events)
    late = 0

    def on_item(item: Any) -> None:
        nonlocal late
        late += item.late
        bar.advance(task)

    from ingest.publisher import BrokerUnavailable

    started = time.monotonic()
    try:
        with bar:
            stats = asyncio.run(sim.run(sim.generate(config), sink, rate=rate, on_item=on_item))
    except BrokerUnavailable as exc:
        raise fail(f"simulation stopped: {exc.detail}", 3) from None
    except RuntimeError as exc:
        raise fail(f"simulation stopped: {exc}", 3) from None
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}", 2) from None
    elapsed = max(time.monotonic() - started, 1e-6)
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(stats.by_kind.items()))
    where = {"file": output if output != "-" else "stdout", "kafka": "Kafka",
             "api": api}[to]
    typer.echo(f"simulated {stats.sent:,} messages ({kinds}; {late:,} late) from {plates:,} "
               f"plates to {where} in {elapsed:.1f} s; seed {used_seed}, start "
               f"{begin.isoformat()}", err=(to == "file" and output == "-"))


def mail_catcher(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Where to keep messages (default PLATEREG_DATA_DIR/mail)")] = None,
) -> None:
    """A local SMTP server on PLATEREG_SMTP_PORT keeping each message as an .eml file."""
    from devtools.mailcatcher import serve

    settings = settings_or_exit()
    target = directory or settings.data_dir / "mail"
    raise typer.Exit(asyncio.run(serve(settings.smtp_host, settings.smtp_port, target)))
