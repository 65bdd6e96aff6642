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

        from platereg.cli import settings_or_exit
        from platereg.http_server import uvicorn_options

        settings = settings_or_exit()
        settings.dsn()  # fail early, naming the variable, if the database is not configured
        uvicorn.run(
            "registry.api:app_from_env", factory=True,
            host=host or settings.host,
            port=settings.registry_port if port is None else port,
            workers=workers, lifespan="on", timeout_graceful_shutdown=20,
            **uvicorn_options(settings),
        )

    @audit_app.command("purge")
    def audit_purge(
        days: Annotated[int | None, typer.Option(
            min=1, help="Keep this many days (default: PLATEREG_AUDIT_RETENTION_DAYS)")] = None,
    ) -> None:
        """Delete audit rows older than the retention period (also runs hourly in the API)."""
        import asyncpg

        from platereg.cli import fail, settings_or_exit
        from registry.audit import purge

        settings = settings_or_exit()
        retention = days or settings.audit_retention_days

        async def go() -> int | None:
            conn = await asyncpg.connect(settings.dsn())
            try:
                return await purge(conn, retention)
            finally:
                await conn.close()

        deleted = asyncio.run(go())
        if deleted is None:
            raise fail("another purge is running; try again later", 1)
        typer.echo(f"purged {deleted} audit row(s) older than {retention} day(s)")
