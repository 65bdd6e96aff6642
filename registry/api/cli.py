"""``platereg serve registry`` and ``platereg audit purge``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    audit_app = typer.Typer(help="The lookup audit log.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @groups["serve"].command("registry")
    def serve_registry(
        workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes "
                                             "(they share nothing but PostgreSQL)")] = 1,
        host: Annotated[str | None, typer.Option(help="Default: PLATEREG_HOST")] = None,
        port: Annotated[int | None, typer.Option(help="Default: PLATEREG_REGISTRY_PORT")] = None,
    ) -> None:
        """Serve the registry API (plates, hotlist, owners, audit)."""
        import uvicorn

        from platereg.commands import settings_or_exit
        from platereg.http_server import uvicorn_options

        settings = settings_or_exit("serve registry")   # exits naming what is unset
        uvicorn.run(
            "registry.api.app:app_from_env", factory=True,
            host=host or settings.host,
            port=settings.registry_port if port is None else port,
            workers=workers, lifespan="on", timeout_graceful_shutdown=20, loop="uvloop",
            **uvicorn_options(settings),
        )

    @audit_app.command("purge")
    def audit_purge(
        days: Annotated[int | None, typer.Option(
            min=1, help="Keep this many days (default: PLATEREG_AUDIT_RETENTION_DAYS)")] = None,
        every: Annotated[float | None, typer.Option(
            min=1, help="Keep running and purge every this many seconds (SIGTERM stops)")]
        = None,
    ) -> None:
        """Delete audit rows older than the retention period, with PLATEREG_PURGE_DATABASE_URL.

        The API also purges hourly when its own role may delete audit rows.
        """
        from platereg.commands import fail, run_async, settings_or_exit, with_connection
        from registry.api.audit import purge

        settings = settings_or_exit("audit purge")
        retention = days or settings.audit_retention_days
        if every is not None:
            raise typer.Exit(run_async(_purge_forever(settings.purge_dsn(), retention, every)))

        deleted = with_connection(settings.purge_dsn(), lambda conn: purge(conn, retention))
        if deleted is None:
            raise fail("another purge is running; try again later", 1)
        typer.echo(f"purged {deleted} audit row(s) older than {retention} day(s)")


async def _purge_forever(dsn: str, retention: int, every: float) -> int:
    """``audit purge --every``: purge now and every ``every`` seconds until SIGTERM/SIGINT."""
    import contextlib
    import signal

    from platereg.db import create_pool
    from registry.api.audit import purge_periodically

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    task = asyncio.create_task(purge_periodically(pool, retention, every=every, first_after=0))
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
    return 0
