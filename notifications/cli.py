"""Notices commands: ``platereg notices schedule|dispatch|paper``."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    from platereg.commands import config_errors_exit, fail, run_async, settings_or_exit

    notices = typer.Typer(help="Owner notices: scheduler, dispatcher, paper letters.",
                          no_args_is_help=True)
    app.add_typer(notices, name="notices")
    groups["notices"] = notices

    @notices.command("schedule")
    def schedule(
        metrics_port: Annotated[int | None, typer.Option(
            help="Port of /healthz /readyz /metrics (0: a free one; default "
                 "PLATEREG_NOTICES_SCHEDULER_PORT)")] = None,
        every: Annotated[float, typer.Option(help="Seconds between runs")] = 30.0,
    ) -> None:
        """Make renewal reminders and expired notices; relay notices to plates.notices."""
        from notifications.service import serve_scheduler

        settings = settings_or_exit("notices schedule")
        with config_errors_exit():
            code = asyncio.run(serve_scheduler(settings, port=metrics_port, every=every))
        raise typer.Exit(code)

    @notices.command("dispatch")
    def dispatch(
        metrics_port: Annotated[int | None, typer.Option(
            help="Port of /healthz /readyz /metrics (0: a free one; default "
                 "PLATEREG_NOTICES_DISPATCHER_PORT)")] = None,
    ) -> None:
        """Deliver notices from plates.notices by e-mail, SMS, webhook and plate display."""
        from notifications.service import serve_dispatcher

        settings = settings_or_exit("notices dispatch")
        raise typer.Exit(run_async(serve_dispatcher(settings, port=metrics_port)))

    @notices.command("paper")
    def paper(
        date: Annotated[str, typer.Option("--date", help="Day of the letters (YYYY-MM-DD)")],
        out: Annotated[Path | None, typer.Option(
            help="PDF to write (default notices-<date>.pdf in PLATEREG_DATA_DIR)")] = None,
    ) -> None:
        """Write one day's paper letters as one PDF; they count as delivered once written."""
        from notifications.paper import print_day
        from platereg.commands import with_connection

        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise fail("--date must be a date like 2026-11-25", 2) from None
        settings = settings_or_exit("notices paper")
        path = out or settings.data_dir / f"notices-{day.isoformat()}.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)

        count = with_connection(settings.dsn(),
                                lambda conn: print_day(conn, settings, day, path))
        typer.echo(f"{count} letter(s) written to {path}" if count
                   else f"no letters queued on {day.isoformat()}")

