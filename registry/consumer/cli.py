"""Registry commands: ``platereg consume registry|relay``, ``platereg dlq list|replay``
and ``platereg quarantine list|release``.

``consume registry`` is added by the composition root (``wiring.cli`` calls
:func:`register_consumer` with the batch hook); the others by :func:`register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from platereg.commands import fail, run_async, settings_or_exit
from platereg.listing import Field, JsonOption, emit

if TYPE_CHECKING:
    from platereg.settings import Settings
    from registry.consumer.store import BatchHook


@contextlib.contextmanager
def _port_in_use_exits(settings: Settings, metrics_port: int | None) -> Iterator[None]:
    """A taken metrics port: one line naming it and its variable, exit 1 (no traceback)."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        port = settings.consumer_metrics_port if metrics_port is None else metrics_port
        raise fail(f"port {port} on {settings.host} is already in use; set "
                   "PLATEREG_CONSUMER_METRICS_PORT (or --metrics-port) to a free port") from None


def register_consumer(consume: typer.Typer, batch_hook: Callable[[], BatchHook]) -> None:
    """``platereg consume registry``, with the hook ``batch_hook()`` gives run in each
    batch's transaction (added by the composition root, ``wiring.cli``, which knows the
    hook and imports it only when the command runs)."""

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
        from registry.consumer.service import serve_registry_consumer

        settings = settings_or_exit("consume registry")
        with _port_in_use_exits(settings, metrics_port):
            code = run_async(serve_registry_consumer(
                settings, batch_hook=batch_hook(), relays=relays, sweep=sweep,
                metrics_port=metrics_port, max_records=max_records, parse_workers=parse_workers))
        raise typer.Exit(code)


def _register_relay(consume: typer.Typer) -> None:
    @consume.command("relay")
    def consume_relay(
        metrics_port: Annotated[int | None, typer.Option(
            help="Port of /healthz /readyz /metrics (default PLATEREG_CONSUMER_METRICS_PORT)")]
        = None,
    ) -> None:
        """Only the outbox relays and the expiry sweep (one process leads at a time)."""
        from registry.consumer.service import serve_relays

        settings = settings_or_exit("consume relay")
        with _port_in_use_exits(settings, metrics_port):
            code = run_async(serve_relays(settings, metrics_port=metrics_port))
        raise typer.Exit(code)


#: The columns of ``platereg dlq list`` (and the fields of its ``--json``).
DLQ_FIELDS = (
    Field("id", identifier=True), Field("reason"), Field("detail"), Field("topic"),
    Field("partition"), Field("offset"), Field("received_at", "received"),
    Field("published_at", "published", text=lambda v: "yes" if v else "no"),
    Field("replayed_at", "replayed"),
    Field("purged_at", "purged", text=lambda v: "yes" if v else ""),
)

#: The columns of ``platereg quarantine list`` (the plate key is what ``release`` takes).
QUARANTINE_FIELDS = (
    Field("plate_key", "plate", identifier=True), Field("reason"), Field("event_id", "event"),
    Field("held_events", "held events"), Field("quarantined_at", "since"),
    Field("updated_at", "last held"),
)


def _register_dlq(app: typer.Typer) -> None:
    dlq = typer.Typer(help="Rejected events: list and replay.", no_args_is_help=True)
    app.add_typer(dlq, name="dlq")

    @dlq.command("list")
    def dlq_list(
        reason: Annotated[str | None, typer.Option(help="Only this reason")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
        include_replayed: Annotated[bool, typer.Option(help="Show replayed ones too")] = False,
        as_json: JsonOption = False,
    ) -> None:
        """List rejected messages (ids, reasons, positions; never their content)."""
        from registry.consumer.dlq import list_rejections

        settings = settings_or_exit("dlq list")
        rows = asyncio.run(list_rejections(settings, reason=reason, limit=limit,
                                           include_replayed=include_replayed))
        emit(DLQ_FIELDS, [{**r, "offset": r["kafka_offset"]} for r in map(dict, rows)],
             as_json=as_json, noun="rejected message")

    @dlq.command("replay")
    def dlq_replay(
        ids: Annotated[list[int] | None, typer.Argument(help="DLQ ids to replay")] = None,
        reason: Annotated[str | None, typer.Option(help="Replay every unreplayed one with "
                                                   "this reason")] = None,
    ) -> None:
        """Re-produce chosen rejected messages, unchanged, to plates.events (e.g. after a fix).

        They are validated again like any event; one still invalid is rejected again.
        """
        from registry.consumer.dlq import replay

        if not ids and not reason:
            raise fail("give DLQ ids or --reason", 2)
        settings = settings_or_exit("dlq replay")
        count = asyncio.run(replay(settings, ids=ids or [], reason=reason))
        typer.echo(f"replayed {count} message(s) to {settings.topic('plates.events')}")


def _register_quarantine(app: typer.Typer) -> None:
    quarantine = typer.Typer(help="Plates whose stored history cannot be folded.",
                             no_args_is_help=True)
    app.add_typer(quarantine, name="quarantine")

    @quarantine.command("list")
    def quarantine_list(
        limit: Annotated[int, typer.Option(help="At most this many, oldest first")] = 100,
        as_json: JsonOption = False,
    ) -> None:
        """List quarantined plates (their new events are stored but not folded).

        A plate stays quarantined until its history is repaired and it is released.
        """
        from registry.consumer.quarantine import list_plates

        settings = settings_or_exit("quarantine list")
        rows = asyncio.run(list_plates(settings, limit=limit))
        emit(QUARANTINE_FIELDS, map(dict, rows), as_json=as_json, noun="quarantined plate")

    @quarantine.command("release")
    def quarantine_release(
        plates: Annotated[list[str], typer.Argument(help="Plate keys, e.g. CA-ON/ABC123")],
    ) -> None:
        """Re-fold each plate from its (repaired) history and end its quarantine.

        A plate whose history still cannot be folded stays quarantined (exit status 1).
        """
        from registry.consumer.quarantine import release

        settings = settings_or_exit("quarantine release")
        results = asyncio.run(release(settings, plates))
        for r in results:
            typer.echo(f"{r.plate_key}: {r.message}")
        if not all(r.released for r in results):
            raise typer.Exit(1)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    _register_relay(groups["consume"])
    _register_dlq(app)
    _register_quarantine(app)
