"""``platereg``: the one command-line entry point.

Shared commands live here (migrate, topics, keys, schemas, run); each service
package adds its own commands through its ``cli.register`` function, so no
service imports another's internals.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Annotated

import typer

from platereg.commands import config_errors_exit, fail, settings_or_exit, with_connection
from platereg.settings import ConfigError

warnings.filterwarnings("ignore", module="platformdirs")

app = typer.Typer(
    name="platereg",
    help="Plate Registry: event-driven licence plate registry (Kafka -> PostgreSQL).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
serve_app = typer.Typer(help="Run an HTTP API.", no_args_is_help=True)
consume_app = typer.Typer(help="Run a Kafka consumer.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schema and AsyncAPI documents.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
app.add_typer(consume_app, name="consume")
app.add_typer(keys_app, name="keys")
app.add_typer(schemas_app, name="schemas")

# The notifications package will add a "notices" group when it is built.
GROUPS = {"serve": serve_app, "consume": consume_app}


@app.command()
def migrate() -> None:
    """Apply database migrations (safe to run twice, or from several processes at once)."""
    from platereg.db import migrate as run_migrations

    settings = settings_or_exit("migrate")
    try:
        applied = run_migrations(settings.migrate_dsn())
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied
                                                          else "; the schema is up to date"))


@app.command()
def roles() -> None:
    """Create or update the database login roles (run as an admin, before `migrate`).

    Connects with PLATEREG_ADMIN_DATABASE_URL; the users and passwords of
    PLATEREG_MIGRATE_DATABASE_URL (made owner of the database),
    PLATEREG_DATABASE_URL (the services) and PLATEREG_PURGE_DATABASE_URL (the
    audit purge) become login roles with just their privileges.
    """
    import psycopg

    from platereg.roles import ensure_roles

    settings = settings_or_exit("roles")
    assert settings.admin_database_url is not None   # required: checked above
    try:
        ensure_roles(settings.admin_database_url.get_secret_value(),
                     service_dsn=settings.dsn(),
                     purge_dsn=settings.purge_dsn(),
                     owner_dsn=settings.migrate_dsn())
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    except psycopg.Error as exc:
        raise fail(f"could not set up the roles: {type(exc).__name__}: "
                   f"{exc.diag.message_primary or exc}", 1) from None
    typer.echo("roles are set up")


@app.command()
def topics() -> None:
    """Create the contract's Kafka topics that do not exist yet.

    The one command that creates topics (services only check theirs exist): run it
    before a new deployment's services, as a principal allowed to create them.
    """
    from aiokafka.errors import KafkaError

    from platereg.kafka import ensure_topics

    settings = settings_or_exit("topics")
    try:
        with config_errors_exit():
            created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise fail(f"cannot create the topics on {settings.kafka_bootstrap_servers}: "
                   f"{type(exc).__name__}: {exc}", 1) from None
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="enforcement, portal, operator or ingest")],
    name: Annotated[str, typer.Option(help="Who or what uses the key")],
    rate_limit: Annotated[float | None, typer.Option(help="Requests per second (default: "
                                                     "PLATEREG_RATE_LIMIT_PER_SECOND)")] = None,
    source: Annotated[list[str] | None, typer.Option(
        help="Source prefix the key may publish for (role ingest: required, repeatable), "
             "e.g. /insurance/acme/")] = None,
) -> None:
    """Create a key. It is printed once; only its hash is stored."""
    from platereg import keys

    settings = settings_or_exit("keys create")
    try:
        key_id, key = with_connection(settings.dsn(), lambda conn: keys.create_key(
            conn, role=role, name=name, rate_limit=rate_limit, sources=source or ()))
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    bound = f"sources: {', '.join(sorted(set(source)))}\n" if source else ""
    typer.echo(f"key id: {key_id}\nrole:   {role}\n{bound}key:    {key}\n"
               "Store the key now: it cannot be shown again.")


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, names, roles; never secrets)."""
    from rich.console import Console
    from rich.table import Table

    from platereg import keys

    settings = settings_or_exit("keys list")

    table = Table("key id", "name", "role", "sources", "rate limit", "created", "revoked")
    for k in with_connection(settings.dsn(), keys.list_keys):
        table.add_row(k.key_id, k.name, k.role, " ".join(k.sources),
                      str(k.rate_limit or "default"),
                      k.created_at.isoformat(timespec="seconds"),
                      k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
    Console().print(table)


@keys_app.command("bind")
def keys_bind(
    key_id: Annotated[str, typer.Argument(help="The ingest key's id")],
    source: Annotated[list[str], typer.Option(
        help="Source prefix the key may publish for (repeatable; replaces the key's list)")],
) -> None:
    """Set the source prefixes of an ingest key (applies within 5 seconds)."""
    from platereg import keys

    settings = settings_or_exit("keys bind")

    async def go() -> bool:
        import asyncpg

        conn = await asyncpg.connect(settings.dsn())
        try:
            return await keys.bind_sources(conn, key_id, source)
        finally:
            await conn.close()

    try:
        bound = asyncio.run(go())
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if not bound:
        raise fail("no active ingest key with that id", 1)
    typer.echo(f"{key_id} may publish for sources: {', '.join(sorted(set(source)))}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id to revoke")]) -> None:
    """Revoke a key; every process refuses it within 5 seconds."""
    from platereg import keys

    settings = settings_or_exit("keys revoke")

    if not with_connection(settings.dsn(), lambda conn: keys.revoke_key(conn, key_id)):
        raise fail("no active key with that id", 1)
    typer.echo(f"revoked {key_id}")


@schemas_app.command("export")
def schemas_export(
    check: Annotated[bool, typer.Option("--check", help="Fail if checked-in files are stale")]
    = False,
) -> None:
    """Regenerate the JSON Schema files and the AsyncAPI document from the models."""
    from schemas import export

    args = ["--check"] if check else []
    raise typer.Exit(export.main(args))


@app.command()
def run(
    demo: Annotated[bool | None, typer.Option(
        "--demo/--no-demo",
        help="Load simulated demo data and make a demo operator key (default: only when "
             "both servers are embedded)")] = None,
) -> None:
    """Start everything locally (embedded servers unless PLATEREG_* URLs are set). Ctrl-C stops."""
    from platereg.runner import run_stack

    settings = settings_or_exit()
    raise typer.Exit(run_stack(settings, demo=demo))


def _register_services() -> None:
    import importlib

    # Each service package owns its commands in these modules; the composition root
    # (wiring.cli) adds those that need more than one service.
    for name in ("registry.cli", "registry.api_cli", "registry.sources_cli", "ingest.cli",
                 "notifications.cli", "wiring.cli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app, GROUPS)


_register_services()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
