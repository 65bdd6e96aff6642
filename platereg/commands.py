"""What every ``platereg`` command module uses: settings or a clear exit, failing with a
message, the event loop of long-running commands, and one database connection for a
short command.

``wiring.cli`` (the entry point) and each service's ``cli`` module import
these; this module imports no command module, so any of them can import it at
the top. It imports the settings, logging and database layers only when a function
needs them: importing the command line stays light, and the registry consumer's parse
worker processes import it (``registry.consumer.parse_worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    import asyncpg

    from platereg.settings import Settings

T = TypeVar("T")


def settings_or_exit(command: str | None = None) -> Settings:
    """Load and validate settings; on error print which variable is wrong and exit 2. So
    too when ``command`` (as typed after ``platereg``, e.g. ``consume registry``) is in
    ``COMMAND_NEEDS`` and a setting it requires is unset. The settings returned log in to
    PostgreSQL as the command's role (its ``PLATEREG_<ROLE>_DATABASE_URL`` when set)."""
    from platereg.logging import configure_logging
    from platereg.settings import COMMAND_NEEDS, ConfigError, load_settings, missing_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"platereg: {exc}", err=True)
        raise typer.Exit(2) from None
    missing = missing_settings(settings, command) if command else []
    if missing:
        raise fail(f"`platereg {command}` cannot start without {', '.join(missing)}", 2)
    configure_logging(settings.log_format, settings.log_level)
    role = COMMAND_NEEDS[command].role if command in COMMAND_NEEDS else None
    return settings if role is None else settings.for_role(role)


PRODUCER_HELP = ("The registered producer to sign as when writing to Kafka (its secret: "
                 "PLATEREG_PRODUCER_SECRET, never an option, which other users could read)")


def with_producer(settings: Settings, producer: str | None) -> Settings:
    """``settings`` signing as ``producer`` (a command's ``--producer``) when given."""
    if producer is None:
        return settings
    from schemas.signing import ProducerError, check_name

    try:
        check_name(producer)
    except ProducerError as exc:
        raise fail(f"--producer: {exc}", 2) from None
    return settings.model_copy(update={"producer_name": producer})


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop (every long-running process uses this); a
    :class:`ConfigError` on the way ends it as :func:`config_errors_exit` says."""
    import uvloop

    with config_errors_exit():
        return uvloop.run(main)


@contextlib.contextmanager
def config_errors_exit() -> Iterator[None]:
    """A :class:`ConfigError` raised in the block (a bad setting, a topic that does not
    exist, the broker refusing this principal) ends the command with its message and exit
    status 2, without a traceback: restarting it would not help."""
    from platereg.settings import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``platereg: message`` to stderr; ``raise fail(...)`` exits with ``code``."""
    typer.echo(f"platereg: {message}", err=True)
    return typer.Exit(code)


def with_connection(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on one database connection, closed afterwards."""
    from platereg.db import connection

    async def go() -> T:
        async with connection(dsn) as conn:
            return await work(conn)

    return asyncio.run(go())
