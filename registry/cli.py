"""Registry commands: ``platereg consume registry|relay`` and ``platereg dlq list|replay``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    from platereg.cli import fail, settings_or_exit

    consume = groups["consume"]

    @consume.command("registry")
    def consume_registry(
        relays: Annotated[bool, typer.Option(help="Also relay the status and DLQ outboxes")]
        = True,
        sweep: Annotated[bool, typer.Option(help="Also run the daily expiry sweep")] = True,
        metrics_port: Annotated[int | None, typer.Option(
            help="Port of /healthz /readyz /metrics (default PLATEREG_CONSUMER_METRICS_PORT; "
                 "0 picks a free one)")] = None,
        max_records: Annotated[int, typer.Option(help="Records per batch (transaction)")]
        = 5000,
        parse_workers: Annotated[int, typer.Option(
            help="Worker processes validating events while the previous batch is written "
                 "(0: validate in the consumer process, no pipelining)")] = 1,
    ) -> None:
        """Fold plates.events into PostgreSQL (exactly-once effect). SIGTERM stops it cleanly."""
        from registry.consumer import serve_registry_consumer

        settings = settings_or_exit()
        raise typer.Exit(asyncio.run(serve_registry_consumer(
            settings, relays=relays, sweep=sweep, metrics_port=metrics_port,
            max_records=max_records, parse_workers=parse_workers)))

    @consume.command("relay")
    def consume_relay(
        metrics_port: Annotated[int | None, typer.Option(
            help="Port of /healthz /readyz /metrics (default PLATEREG_CONSUMER_METRICS_PORT)")]
        = None,
    ) -> None:
        """Only the outbox relays and the expiry sweep (one process leads at a time)."""
        from registry.relay import serve_relays

        settings = settings_or_exit()
        raise typer.Exit(asyncio.run(serve_relays(settings, metrics_port=metrics_port)))

    dlq = typer.Typer(help="Rejected events: list and replay.", no_args_is_help=True)
    app.add_typer(dlq, name="dlq")

    @dlq.command("list")
    def dlq_list(
        reason: Annotated[str | None, typer.Option(help="Only this reason")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
        include_replayed: Annotated[bool, typer.Option(help="Show replayed ones too")] = False,
    ) -> None:
        """List rejected messages (ids, reasons, positions; never their content)."""
        from rich.console import Console
        from rich.table import Table

        from registry.dlq import list_rejections

        settings = settings_or_exit()
        rows = asyncio.run(list_rejections(settings, reason=reason, limit=limit,
                                           include_replayed=include_replayed))
        table = Table("id", "reason", "detail", "partition", "offset", "received",
                      "published", "replayed")
        for r in rows:
            table.add_row(str(r["id"]), r["reason"], r["detail"][:80], str(r["partition"]),
                          str(r["kafka_offset"]), r["received_at"].isoformat(timespec="seconds"),
                          "yes" if r["published_at"] else "no",
                          r["replayed_at"].isoformat(timespec="seconds")
                          if r["replayed_at"] else "")
        Console().print(table)

    @dlq.command("replay")
    def dlq_replay(
        ids: Annotated[list[int] | None, typer.Argument(help="DLQ ids to replay")] = None,
        reason: Annotated[str | None, typer.Option(help="Replay every unreplayed one with "
                                                   "this reason")] = None,
    ) -> None:
        """Re-produce chosen rejected messages, unchanged, to plates.events (e.g. after a fix).

        They are validated again like any event; one still invalid is rejected again.
        """
        from registry.dlq import replay

        if not ids and not reason:
            raise fail("give DLQ ids or --reason", 2)
        settings = settings_or_exit()
        count = asyncio.run(replay(settings, ids=ids or [], reason=reason))
        typer.echo(f"replayed {count} message(s) to {settings.topic('plates.events')}")
