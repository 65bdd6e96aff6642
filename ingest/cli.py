"""Commands of the ingest package: ``serve ingest`` and ``import``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from platereg.commands import PRODUCER_HELP, fail, settings_or_exit, with_producer

IMPORT_HELP = """Import a file of plate events (NDJSON or CSV), streaming, in constant memory.

Valid events are published to plates.events, signed as the registered producer
PLATEREG_PRODUCER_NAME (or --producer) with PLATEREG_PRODUCER_SECRET, or posted to
the ingest API with --api/--key; rejected lines go to the report file with their
reasons.
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
        return KafkaLineSink(settings)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


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
    producer: Annotated[str | None, typer.Option(
        help=PRODUCER_HELP, show_default="PLATEREG_PRODUCER_NAME")] = None,
) -> None:
    from ingest.importer import ImportUsageError, import_file

    settings = with_producer(settings_or_exit(), producer)
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


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    groups["serve"].command("ingest")(serve_ingest)
    app.command("import", help=IMPORT_HELP)(import_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: platereg import|serve ingest")
