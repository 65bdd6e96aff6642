"""``platereg sources list|set|remove|check``: the source policy ("who may say what"),
and ``platereg sources producer add|rotate|retire-secret|revoke|list``: the signed
producers of plates.events (``platereg.security.producer_store``).

Changes are rows of ``source_policy`` and ``producers``; the registry consumer applies
them from its next batch on and the ingest API (the policy) within two seconds, without a
restart. A producer's secret is printed once, by ``add`` and ``rotate``, never listed.
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

        settings = settings_or_exit("sources list")
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

        settings = settings_or_exit("sources set")
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

        settings = settings_or_exit("sources remove")
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
        settings = settings_or_exit("sources check")
        policy = _with_conn(settings.dsn(), load_policy)
        allowed = policy.allows(source, event_type, reason)
        typer.echo(("allowed: " if allowed else "refused (unauthorized_source): ")
                   + policy.explain(source, event_type, reason).removeprefix("source: "))
        if not allowed:
            raise typer.Exit(1)
    register_producers(sources, settings_or_exit, fail)


def _producer_call(dsn: str, action: Callable[..., Awaitable[T]], fail: Callable) -> T:
    from schemas.signing import ProducerError

    try:
        return _with_conn(dsn, action)
    except ProducerError as exc:
        raise fail(str(exc), 1) from None


def register_producers(sources: typer.Typer, settings_or_exit: Callable,
                       fail: Callable) -> None:
    """``platereg sources producer ...`` (each command imports the producer store when
    it runs)."""
    producer = typer.Typer(help="Signed producers: who may write plates.events, for which "
                                "sources, with which secrets.", no_args_is_help=True)
    sources.add_typer(producer, name="producer")

    @producer.command("add")
    def producer_add(
        name: Annotated[str, typer.Argument(help="The producer's name (its "
                                            "platereg-producer header)")],
        source: Annotated[list[str], typer.Option(help="Source prefix it may speak for "
                                                  "(repeat for several), e.g. /insurance/acme/")],
        secret_from_env: Annotated[str | None, typer.Option(
            help="Use the secret in this environment variable (generated elsewhere, e.g. "
                 "a deployment's secret store) instead of a new one; nothing is printed, "
                 "and a producer already registered with it is left as it is")] = None,
    ) -> None:
        """Register a producer and print its secret, once."""
        import os

        from platereg.security import producer_store as store

        dsn = settings_or_exit("sources producer add").dsn()
        if secret_from_env is not None:
            given = os.environ.get(secret_from_env, "")
            added = _producer_call(dsn, lambda c: store.add_or_keep(c, name, source, given),
                                   fail)
            typer.echo(f"producer {name}: {'added' if added else 'registered already'}")
            return
        secret = _producer_call(dsn, lambda c: store.add(c, name, source), fail)
        typer.echo(f"producer: {name}\nsources:  {', '.join(sorted(set(source)))}\n"
                   f"secret:   {secret}\nStore the secret now: it cannot be shown again. "
                   "Sign each message as the contract says (platereg-producer, "
                   "platereg-signature).")

    @producer.command("rotate")
    def producer_rotate(name: Annotated[str, typer.Argument(help="The producer's name")]) -> None:
        """Add a new secret and print it once; the old one stays valid until retire-secret."""
        from platereg.security import producer_store as store

        dsn = settings_or_exit("sources producer rotate").dsn()
        secret = _producer_call(dsn, lambda c: store.rotate(c, name), fail)
        typer.echo(f"new secret: {secret}\nBoth secrets are accepted until `platereg sources "
                   f"producer retire-secret {name}`.")

    @producer.command("retire-secret")
    def producer_retire(name: Annotated[str, typer.Argument(help="The producer's name")]) -> None:
        """Keep only the newest secret: messages signed with the older one are refused."""
        from platereg.security import producer_store as store

        dsn = settings_or_exit("sources producer retire-secret").dsn()
        count = _producer_call(dsn, lambda c: store.retire_secret(c, name), fail)
        if count == 0:
            raise fail(f"{name} has one secret only; nothing to retire", 1)
        typer.echo(f"retired {count} secret(s) of {name}; only the newest is accepted")

    @producer.command("revoke")
    def producer_revoke(name: Annotated[str, typer.Argument(help="The producer's name")]) -> None:
        """End the producer: every message naming it is refused (the name is never reused)."""
        from platereg.security import producer_store as store

        dsn = settings_or_exit("sources producer revoke").dsn()
        _producer_call(dsn, lambda c: store.revoke(c, name), fail)
        typer.echo(f"revoked {name}")

    @producer.command("list")
    def producer_list() -> None:
        """List producers, their source prefixes and how many secrets (never a secret)."""
        from platereg.security import producer_store as store

        infos = _with_conn(settings_or_exit("sources producer list").dsn(), store.list_producers)
        for p in infos:
            state = (f"revoked {p.revoked_at.isoformat(timespec='seconds')}" if p.revoked_at
                     else f"{p.secrets} secret(s)")
            typer.echo(f"{p.name}\t{' '.join(p.prefixes)}\t{state}")
        typer.echo(f"{len(infos)} producer(s)", err=True)
