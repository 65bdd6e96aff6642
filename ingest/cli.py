"""Commands of the ingest package: ``serve ingest``, ``import`` and ``simulate``."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from platereg.commands import fail, settings_or_exit

IMPORT_HELP = """Import a file of plate events (NDJSON or CSV), streaming, in constant memory.

Valid events are published to plates.events (or posted to the ingest API with
--api/--key); rejected lines go to the report file with their reasons.
Re-running the same file is harmless: events keep their ids and the registry
deduplicates by id.

\b
NDJSON: one CloudEvents JSON event per line; blank lines are skipped.
CSV: UTF-8, comma separated, with a header row (names case-insensitive):
  id, source, type, time       CloudEvents attributes (required)
  subject                      plate key, e.g. CA-ON/ABC123
                               (or the two columns jurisdiction, plate)
  specversion, datacontenttype optional
  data                         the data object as JSON text, and/or
  data.<path>                  one data field per column, e.g. data.expires_on,
                               data.owner.name, data.vehicle.year (an integer);
                               an empty cell means absent.
Unknown columns stop the import before anything is published.

\b
Exit codes: 0 all published; 1 some lines rejected (the rest published);
2 usage error; 3 the broker/API stopped acknowledging (re-run the file).
"""

SIMULATE_HELP = """Generate realistic registry traffic to Kafka, the ingest API or an NDJSON file.

Plates are issued, renewed (mostly on time, some late), suspended and
reinstated, reported stolen and recovered, transferred, updated, cancelled,
paired with smart plate devices. A fixed --seed gives the same stream, byte for byte; times
then start at --start (default 2025-01-01T00:00:00Z), never at the wall clock.
Without --seed a random one is used (and printed) and the window ends now.
Memory grows with --plates (a few KB each), not with the number of events.
"""


def serve_ingest(
    host: Annotated[str | None, typer.Option(help="Bind address (default PLATEREG_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PLATEREG_INGEST_PORT)")] = None,
) -> None:
    """Run the ingest API (POST /v1/events)."""
    import uvicorn

    from ingest.api import create_ingest_app
    from platereg.http_server import uvicorn_options

    settings = settings_or_exit("serve ingest")   # exits naming what is unset
    uvicorn.run(create_ingest_app(settings), host=host or settings.host,
                port=port if port is not None else settings.ingest_port,
                loop="uvloop", **uvicorn_options(settings))


def _import_sink(settings: Any, api: str | None, key: str | None) -> Any:
    """Where ``platereg import`` publishes: the ingest API with ``--api``, else Kafka."""
    from ingest.importer import ApiLineSink, KafkaLineSink
    from platereg.settings import ConfigError

    if api:
        if not key:
            raise fail("--api needs --key (or PLATEREG_API_KEY)", 2)
        return ApiLineSink(api, key)
    try:
        settings.bootstrap()
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    return KafkaLineSink(settings)


def import_command(
    file: Annotated[Path, typer.Argument(help="NDJSON or CSV file of events")],
    fmt: Annotated[str, typer.Option("--format", help="auto, ndjson or csv")] = "auto",
    report: Annotated[Path | None, typer.Option(
        help="Rejected-lines report (NDJSON); default FILE.rejected.ndjson")] = None,
    api: Annotated[str | None, typer.Option(
        help="Post to this ingest API (e.g. http://127.0.0.1:8081) instead of Kafka")] = None,
    key: Annotated[str | None, typer.Option(
        envvar="PLATEREG_API_KEY", help="API key (role ingest) for --api")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    from ingest.importer import ImportUsageError, import_file

    settings = settings_or_exit()
    if fmt not in ("auto", "ndjson", "csv"):
        raise fail("--format must be auto, ndjson or csv", 2)
    if not file.is_file():
        raise fail(f"no such file: {file}", 2)
    report = report or file.with_name(file.name + ".rejected.ndjson")
    sink = _import_sink(settings, api, key)

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = Console(stderr=True)
    size = file.stat().st_size
    bar = Progress(TextColumn("importing"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
                   TextColumn("{task.fields[rate]:>8,.0f} lines/s"), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=err,
                   disable=not progress or not err.is_terminal)
    started = time.monotonic()
    task = bar.add_task("import", total=size or None, rate=0.0)

    def on_progress(read: int, stats: Any) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        bar.update(task, completed=read, rate=stats.lines / elapsed)

    try:
        with bar:
            stats = asyncio.run(import_file(file, fmt=fmt, sink=sink, report_path=report,
                                            progress=on_progress))
    except ImportUsageError as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"cannot write the report {report}: {exc.strerror}", 2) from None
    elapsed = max(time.monotonic() - started, 1e-6)
    target = f"the ingest API at {api}" if api else "Kafka"
    typer.echo(f"{file}: {stats.lines:,} lines read, {stats.published:,} events published to "
               f"{target}, {stats.rejected:,} rejected, {stats.blank:,} blank; "
               f"{elapsed:.1f} s ({stats.lines / elapsed:,.0f} lines/s)")
    if stats.reasons:
        reasons = ", ".join(f"{r} {n:,}" for r, n in stats.reasons.most_common())
        typer.echo(f"rejected by reason: {reasons}")
        typer.echo(f"rejected lines and reasons: {report}")
    if stats.aborted:
        through = (f"every event up to line {stats.acked_through:,} was acknowledged"
                   if stats.acked_through else "nothing was acknowledged")
        typer.echo(f"platereg: import stopped: {stats.aborted}; {through}. Run the same "
                   "command again (already published events are deduplicated by id).", err=True)
    raise typer.Exit(stats.exit_code)


def _simulated_start(start: str | None, seed: int | None, span: timedelta) -> datetime:
    """Where simulated time begins: ``--start``, the seeded default, or now minus the span."""
    from ingest import simulate as sim

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
    from ingest import simulate as sim
    from platereg.settings import ConfigError

    if to == "file":
        return sim.FileSink(output)
    if to == "kafka":
        try:
            settings.bootstrap()
        except ConfigError as exc:
            raise fail(str(exc), 2) from None
        return sim.KafkaSink(settings)
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
) -> None:
    from ingest import simulate as sim

    settings = settings_or_exit()
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


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    groups["serve"].command("ingest")(serve_ingest)
    app.command("import", help=IMPORT_HELP)(import_command)
    app.command("simulate", help=SIMULATE_HELP)(simulate_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: platereg import|simulate|serve ingest")
