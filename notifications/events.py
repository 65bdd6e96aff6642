"""Event-driven notices, made in the registry consumer's batch transaction.

``record_batch_notices`` is the one call the consumer makes (the composition
root, ``wiring.cli``, hands it to the registry consumer as its batch hook): from
the plates' states before the batch, the new events and (for re-folded plates)
their history, it creates one notice per notifying event per recipient, and
queues for the scheduler the plates whose expiry, issue or cancellation changed.
Nothing here commits: it all commits or rolls back with the batch.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import asyncpg

from notifications import rules, store
from schemas.fold import HistoryEvent, PlateState


class NewEvent(Protocol):
    """What the notices need of an event the batch applies (the registry's parsed event)."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def time(self) -> dt.datetime: ...
    @property
    def jurisdiction(self) -> str: ...
    @property
    def plate(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any] | None: ...


def _applied(events: Sequence[NewEvent] | Sequence[HistoryEvent]) -> list[rules.AppliedEvent]:
    out = [rules.AppliedEvent(e.event_id, e.type, e.time, e.data or {}, e.source)
           for e in events]
    return sorted(out, key=lambda e: e.sort_key)


def batch_drafts(old: Mapping[str, PlateState | None], new_states: Mapping[str, PlateState],
                 by_plate: Mapping[str, Sequence[NewEvent]],
                 history: Mapping[str, Sequence[HistoryEvent]]) -> list[rules.Draft]:
    """Pure: the notices of one batch (``history`` holds the re-folded plates')."""
    drafts: list[rules.Draft] = []
    for key in sorted(by_plate):
        events = by_plate[key]
        if not any(e.type in rules.EVENT_KINDS for e in events):
            continue
        new_ids = {(e.source, e.event_id) for e in events}
        start = None if key in history else old.get(key)
        if start is None:
            start = PlateState(jurisdiction=events[0].jurisdiction, plate=events[0].plate)
        drafts += rules.event_drafts(start, _applied(history.get(key, events)), new_ids)
    return drafts


#: Reminder windows are at most 366 days (settings); a day more for time zones.
HORIZON = dt.timedelta(days=367)


def schedule_changed(old: Mapping[str, PlateState | None], new_states: Mapping[str, PlateState],
                     now: dt.datetime) -> list[str]:
    """Plates whose expiry, issue or cancellation changed and that may already be inside
    a window (a later expiry is found by the scheduler's date lookup when its window
    opens)."""
    out = []
    horizon = now.date() + HORIZON
    for key, after in new_states.items():
        if not after.issued or after.expires_on is None or after.expires_on > horizon:
            continue
        before = old.get(key)
        if before is None or (before.expires_on, before.issued, before.cancelled) != (
                after.expires_on, after.issued, after.cancelled):
            out.append(key)
    return out


async def record_batch_notices(conn: asyncpg.Connection, old: Mapping[str, PlateState | None],
                               new_states: Mapping[str, PlateState],
                               by_plate: Mapping[str, Sequence[NewEvent]],
                               history: Mapping[str, Sequence[HistoryEvent]],
                               now: dt.datetime) -> Counter:
    """Create the batch's notices and queue rechecks; returns notices made per kind."""
    await store.queue_rechecks(conn, schedule_changed(old, new_states, now))
    return await store.insert_drafts(conn, batch_drafts(old, new_states, by_plate, history), now)
