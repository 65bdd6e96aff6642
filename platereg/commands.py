"""What every ``platereg`` command module uses: settings or a clear exit, failing with a
message, the event loop of long-running commands, and one database connection for a
short command.

``wiring.cli`` (the entry point) and each service's ``cli`` module import
these; this module imports no command module, so any of them can import it at
the top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import typer

from platereg.db import connection
from platereg.logging import configure_logging
from platereg.settings import ConfigError, Settings, load_settings

T = TypeVar("T")


def settings_or_exit(role: str | None = None) -> Settings:
    """Load and validate settings; on error print which variable is wrong and exit 2.

    ``role``: the database role the command logs in as (``platereg.security.roles``):
    PLATEREG_DATABASE_URL becomes that role's URL when it is set."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"platereg: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings if role is None else settings.for_role(role)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop (every long-running process uses this)."""
    import uvloop

    return uvloop.run(main)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``platereg: message`` to stderr; ``raise fail(...)`` exits with ``code``."""
    typer.echo(f"platereg: {message}", err=True)
    return typer.Exit(code)


def with_connection(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on one database connection, closed afterwards."""

    async def go() -> T:
        async with connection(dsn) as conn:
            return await work(conn)

    return asyncio.run(go())
