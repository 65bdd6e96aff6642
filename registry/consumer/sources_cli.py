"""``platereg sources list|set|remove|check``: the source policy ("who may say what").

Changes are rows of ``source_policy``; the registry consumer applies them from
its next batch on and the ingest API within two seconds, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from platereg.listing import Field, JsonOption, emit

T = TypeVar("T")

#: The columns of ``platereg sources list`` (reasons: null or "any" = any reason).
SOURCE_FIELDS = (
    Field("prefix", identifier=True), Field("type"),
    Field("reasons", text=lambda v: "any" if v is None else ",".join(v)),
)

_REASON_HELP = ("A reason the prefix may use (plate.suspended / plate.reinstated; repeat it; "
                "'none' = plate.reinstated without a reason). None given: any reason.")


def _with_conn(dsn: str, action: Callable[..., Awaitable[T]]) -> T:
    async def go() -> T:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            return await action(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    from platereg.commands import fail, settings_or_exit

    sources = typer.Typer(help="The source policy: which sources may send which events.",
                          no_args_is_help=True)
    app.add_typer(sources, name="sources")

    @sources.command("list")
    def sources_list(as_json: JsonOption = False) -> None:
        """List the policy: per source prefix, the event types (and reasons) it may send."""
        from platereg.security.policy_store import load_grants

        settings = settings_or_exit()
        grants = _with_conn(settings.dsn(), load_grants)
        emit(SOURCE_FIELDS, [{"prefix": g.prefix, "type": g.type,
                              "reasons": None if g.reasons is None else sorted(g.reasons)}
                             for g in grants], as_json=as_json, noun="rule")

    @sources.command("set")
    def sources_set(
        prefix: Annotated[str, typer.Argument(help="Source prefix, e.g. /insurance/acme/")],
        event_type: Annotated[str, typer.Argument(help="Event type, e.g. plate.suspended")],
        reason: Annotated[list[str] | None, typer.Option(help=_REASON_HELP)] = None,
    ) -> None:
        """Allow sources starting with PREFIX to send EVENT_TYPE (replaces its reasons)."""
        from platereg.security.policy_store import set_grant
        from schemas.policy import PolicyError

        settings = settings_or_exit()
        try:
            grant = _with_conn(settings.dsn(),
                               lambda c: set_grant(c, prefix, event_type, reason or None))
        except PolicyError as exc:
            raise fail(str(exc), 2) from None
        typer.echo(f"{grant.prefix} may send {grant.describe()}")

    @sources.command("remove")
    def sources_remove(
        prefix: Annotated[str, typer.Argument(help="Source prefix as listed")],
        event_type: Annotated[str | None, typer.Argument(
            help="Only this event type (default: every type of the prefix)")] = None,
    ) -> None:
        """Stop allowing PREFIX to send EVENT_TYPE (or anything)."""
        from platereg.security.policy_store import remove_grants

        settings = settings_or_exit()
        count = _with_conn(settings.dsn(), lambda c: remove_grants(c, prefix, event_type))
        if count == 0:
            raise fail("no such rule (see `platereg sources list`)", 1)
        typer.echo(f"removed {count} rule(s)")

    @sources.command("check")
    def sources_check(
        source: Annotated[str, typer.Argument(help="An event source, e.g. /insurance/acme/1")],
        event_type: Annotated[str, typer.Argument(help="Event type")],
        reason: Annotated[str | None, typer.Option(
            help="data.reason of the event (plate.suspended / plate.reinstated)")] = None,
    ) -> None:
        """May SOURCE send EVENT_TYPE (with --reason)? Exit 0 if allowed, 1 if not."""
        from platereg.security.policy_store import load_policy
        from schemas.policy import KNOWN_TYPES

        if event_type not in KNOWN_TYPES:
            raise fail(f"unknown event type {event_type!r}", 2)
        settings = settings_or_exit()
        policy = _with_conn(settings.dsn(), load_policy)
        allowed = policy.allows(source, event_type, reason)
        typer.echo(("allowed: " if allowed else "refused (unauthorized_source): ")
                   + policy.explain(source, event_type, reason).removeprefix("source: "))
        if not allowed:
            raise typer.Exit(1)
