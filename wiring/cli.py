"""Commands that need more than one service: ``platereg consume registry``.

The registry consumer records the notices of its events in the same
transaction as the batch that applies them (contract section 4: one notice per
event per recipient, made exactly once with the event that caused it). The
registry defines the hook (``registry.consumer.store.BatchHook``); the notices provide
it (``notifications.events.record_batch_notices``); here the two meet.
"""

from __future__ import annotations

import typer

from notifications.events import record_batch_notices
from registry.consumer.cli import register_consumer
from registry.consumer.store import BatchHook

#: What the registry consumer runs in each batch transaction.
BATCH_HOOK: BatchHook = record_batch_notices


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    register_consumer(groups["consume"], BATCH_HOOK)
