"""``platereg``: the one command-line entry point, in the composition root.

Shared commands live here (migrate, roles, topics, keys, schemas). Each service
package offers its own commands through its ``cli`` module's ``register``
function, and the developer tools (``devtools.cli``: run, logs, demo, simulate, the
mail catcher) offer theirs as plain functions; this module imports all of them
directly, so the import-graph test sees every arrow, and no service imports
another's internals or the developer tools.

Commands that need more than one service are put together here too: the
registry consumer records the notices of its events in the same transaction as
the batch that applies them (contract section 4: one notice per event per
recipient, made exactly once with the event that caused it). The registry
defines the hook (``registry.consumer.store.BatchHook``); the notices provide it
(``notifications.events.record_batch_notices``); here the two meet.

Importing this module builds the command tree and no more: the command modules import
what a command needs (settings, database, Kafka, the services) when it runs. The registry
consumer's parse worker processes import it too, since ``multiprocessing`` starts a worker
by importing the main module of its parent (``registry.consumer.parse_worker``).
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import TYPE_CHECKING, Annotated

import typer

from devtools import cli as devtools_cli
from ingest import cli as ingest_cli
from notifications import cli as notifications_cli
from platereg.commands import (
    config_errors_exit,
    fail,
    run_async,
    settings_or_exit,
    with_connection,
)
from platereg.listing import Field, JsonOption, emit
from registry.api import cli as registry_api_cli
from registry.consumer import cli as registry_consumer_cli
from registry.consumer import sources_cli as registry_sources_cli

if TYPE_CHECKING:
    from registry.consumer.store import BatchHook

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

# The groups the services add commands to (notifications.cli adds "notices").
GROUPS = {"serve": serve_app, "consume": consume_app}


def batch_hook() -> BatchHook:
    """What the registry consumer runs in each batch transaction: the notices of its events
    (imported when the consumer starts)."""
    from notifications.events import record_batch_notices

    return record_batch_notices


@app.command()
def migrate() -> None:
    """Apply database migrations, the grants of each database role and the retention
    settings (safe to run twice, or from several processes at once)."""
    from platereg.db import migrate as run_migrations
    from platereg.retention import retention_days
    from platereg.security.roles import GrantsMissing
    from platereg.settings import ConfigError

    settings = settings_or_exit("migrate")
    try:
        applied = run_migrations(settings.migrate_dsn(), retention_days(settings))
    except (ConfigError, GrantsMissing) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied
                                                          else "; the schema is up to date"))


@app.command()
def roles() -> None:
    """Create or update the database roles (run as an admin, before `migrate`).

    Connects with PLATEREG_ADMIN_DATABASE_URL and creates the group role of each
    service and job; the user of PLATEREG_MIGRATE_DATABASE_URL becomes the owner of
    the database, and the user and password of each PLATEREG_<ROLE>_DATABASE_URL that
    is set (CONSUMER, REGISTRY_API, INGEST_API, NOTICES_SCHEDULER, NOTICES_DISPATCHER,
    PURGE, OPERATOR) a login role in its group. `platereg migrate` then grants each
    group just what it needs.
    """
    import psycopg

    from platereg.security.roles import ROLES, ensure_roles
    from platereg.settings import ConfigError

    settings = settings_or_exit("roles")
    assert settings.admin_database_url is not None   # required: checked above
    logins = {name: dsn for name in ROLES if (dsn := settings.role_dsn(name)) is not None}
    try:
        done = ensure_roles(settings.admin_database_url.get_secret_value(), logins,
                            owner_dsn=settings.migrate_dsn())
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    except psycopg.Error as exc:
        raise fail(f"could not set up the roles: {type(exc).__name__}: "
                   f"{exc.diag.message_primary or exc}", 1) from None
    unset = [name for name in ROLES if name not in logins]
    typer.echo(f"roles are set up; logins: {', '.join(done) or 'none'}"
               + (f"; no URL (no login made) for: {', '.join(unset)}" if unset else ""))


@app.command()
def purge(
    every: Annotated[float | None, typer.Option(
        min=1, help="Keep running and purge every this many seconds (SIGTERM stops)")] = None,
) -> None:
    """Remove the personal data past its retention: audit rows, notices' recipients and
    texts, dead-letter values, sign-in links, owner sessions.

    The retention of each kind is the database's (PLATEREG_*_RETENTION_DAYS, written by
    `platereg migrate`). Logs in with PLATEREG_PURGE_DATABASE_URL; shows a progress bar on
    a terminal. One purge runs at a time.
    """
    from platereg import retention

    settings = settings_or_exit("purge")
    if every is not None:
        raise typer.Exit(run_async(retention.purge_forever(settings.dsn(), every)))
    outcomes = retention.purge_once(settings.dsn())
    if outcomes is None:
        raise fail("another purge is running; try again later", 1)
    for line in retention.summary(outcomes):
        typer.echo(line)


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
    from platereg.security import keys

    settings = settings_or_exit("keys create")
    try:
        key_id, key = with_connection(settings.dsn(), lambda conn: keys.create_key(
            conn, role=role, name=name, rate_limit=rate_limit, sources=source or ()))
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    bound = f"sources: {', '.join(sorted(set(source)))}\n" if source else ""
    typer.echo(f"key id: {key_id}\nrole:   {role}\n{bound}key:    {key}\n"
               "Store the key now: it cannot be shown again.")


#: The columns of ``platereg keys list`` (and the fields of its ``--json``).
KEY_FIELDS = (
    Field("key_id", identifier=True), Field("name"), Field("role"), Field("sources"),
    Field("rate_limit", text=lambda v: "default" if v is None else str(v)),
    Field("created_at", "created"), Field("revoked_at", "revoked"),
)


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List keys (ids, names, roles; never secrets)."""
    from dataclasses import asdict

    from platereg.security import keys

    settings = settings_or_exit("keys list")
    rows = [asdict(k) for k in with_connection(settings.dsn(), keys.list_keys)]
    emit(KEY_FIELDS, rows, as_json=as_json, noun="key")


@keys_app.command("bind")
def keys_bind(
    key_id: Annotated[str, typer.Argument(help="The ingest key's id")],
    source: Annotated[list[str], typer.Option(
        help="Source prefix the key may publish for (repeatable; replaces the key's list)")],
) -> None:
    """Set the source prefixes of an ingest key (applies within 5 seconds)."""
    from platereg.security import keys

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
    from platereg.security import keys

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


def _register_commands() -> None:
    """The services' and the developer tools' commands, in the order ``--help`` lists them."""
    app.command("run")(devtools_cli.run)
    app.command("logs")(devtools_cli.logs)
    app.command("demo")(devtools_cli.demo)
    registry_consumer_cli.register(app, GROUPS)
    registry_api_cli.register(app, GROUPS)
    registry_sources_cli.register(app, GROUPS)
    ingest_cli.register(app, GROUPS)
    app.command("simulate", help=devtools_cli.SIMULATE_HELP)(devtools_cli.simulate_command)
    notifications_cli.register(app, GROUPS)
    GROUPS["notices"].command("mail-catcher")(devtools_cli.mail_catcher)
    registry_consumer_cli.register_consumer(GROUPS["consume"], batch_hook)


_register_commands()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
