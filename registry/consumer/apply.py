"""The registry's use case: apply one batch of parsed records to the database.

:func:`apply_batch` does everything one batch does, in the caller's
transaction: the offset fence, new events into the history, plates folded
(incrementally, or re-folded from the history when an event arrives late;
a plate whose stored history cannot be folded is quarantined), after the signed
producers' checks (``registry.consumer.signatures``) and the source policy,
status changes and rejections recorded in their outboxes, and the consumed
offsets stored. No Kafka here: ``registry.consumer.loop`` feeds it records and
handles :class:`Fenced` and :class:`ConcurrentWriter`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from platereg.dead_letter import DeadLetter
from platereg.security.producer_store import Producers
from registry.consumer.batch import (
    Parsed,
    Rejected,
    StatusChange,
    Unfoldable,
    authorize,
    classify,
    fold_history,
    plan_plates,
    status_changes,
)
from registry.consumer.signatures import Message, verify
from schemas.fold import HistoryEvent, PlateState, today_in
from schemas.policy import Policy


class QuarantineRow(NamedTuple):
    """A plate to quarantine; a plate already there keeps its first reason and event."""

    plate_key: str
    reason: str
    event_id: str | None   # the stored event at fault, when one is
    held_events: int       # this batch's events of the plate, stored but not folded


class BatchStore(Protocol):
    """What :func:`apply_batch` needs of the database, all in one transaction.

    ``registry.consumer.store.SqlStore`` is the PostgreSQL one (its methods are the only
    other declaration of these operations; a unit test keeps the two in step); the unit
    tests use an in-memory one.
    """

    async def lock_offsets(self, group: str, topic: str,
                           partitions: Sequence[int]) -> dict[int, int]:
        """Lock and read the stored offsets of ``partitions``."""
        ...

    async def source_policy(self) -> Policy:
        """The source policy as of this transaction (contract section 2, "Who may say
        what")."""
        ...

    async def producers(self) -> Producers:
        """The registered producers as of this transaction (contract section 2, "Signed
        producers")."""
        ...

    async def known_fingerprints(self, ids: Sequence[tuple[str, str]]
                                 ) -> dict[tuple[str, str], str]:
        """Fingerprints of the events already stored among these (source, id)s."""
        ...

    async def insert_events(self, events: Sequence[Parsed]) -> int:
        """Insert new events; how many were inserted (fewer: a concurrent writer)."""
        ...

    async def lock_quarantined(self, keys: Sequence[str]) -> set[str]:
        """The quarantined plates among ``keys``, locked against a concurrent release."""
        ...

    async def quarantine(self, rows: Sequence[QuarantineRow]) -> None:
        """Quarantine these plates (or count more held events of those already there)."""
        ...

    async def lock_plates(self, keys: Sequence[str]) -> dict[str, PlateState]:
        """Lock and read the existing plates among ``keys``."""
        ...

    async def history(self, keys: Sequence[str]) -> dict[str, list[HistoryEvent]]:
        """Every stored event of these plates (any order)."""
        ...

    async def upsert_plates(self, states: Sequence[PlateState]) -> set[str]:
        """Write the states; the keys that were inserted rather than updated."""
        ...

    async def insert_status_changes(self, changes: Sequence[StatusChange]) -> None:
        """Record status changes, in order, for the status relay."""
        ...

    async def insert_dlq(self, letters: Sequence[DeadLetter]) -> None:
        """Record rejections (the records as consumed, and why) for the DLQ relay."""
        ...

    async def record_notices(self, old: Mapping[str, PlateState | None],
                             new_states: Mapping[str, PlateState],
                             by_plate: Mapping[str, Sequence[Parsed]],
                             history: Mapping[str, Sequence[HistoryEvent]],
                             now: dt.datetime) -> Counter:
        """Create the owner notices these changes call for; notices made per kind."""
        ...

    async def set_offsets(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Store the offsets after the batch, only forward: raise :class:`Fenced` (with
        the stored offsets) when a stored offset is not below the new one."""
        ...


class Fenced(Exception):
    """Another consumer stored offsets for these partitions first."""

    def __init__(self, stored: dict[int, int]) -> None:
        super().__init__("offsets moved by another consumer")
        self.stored = stored


class ConcurrentWriter(Exception):
    """A concurrent transaction wrote the same event id or created the same plate."""


@dataclass
class Outcome:
    applied: Counter = field(default_factory=Counter)       # type -> n
    duplicates: Counter = field(default_factory=Counter)    # type -> n
    rejected: list[Rejected] = field(default_factory=list)
    status_changes: int = 0
    refolded: int = 0
    quarantined: list[str] = field(default_factory=list)   # reasons of plates newly quarantined
    quarantined_events: Counter = field(default_factory=Counter)   # type -> n, stored unfolded
    notices: Counter = field(default_factory=Counter)       # kind -> n


async def apply_batch(
    db: BatchStore, *, group: str, topic: str,
    expected: dict[int, int], next_offsets: dict[int, int],
    parsed: Sequence[Parsed | Rejected], messages: Sequence[Message],
    tz: dt.tzinfo, now: dt.datetime,
) -> Outcome:
    """Everything one batch does, in the caller's transaction (``db``).

    ``expected``: partition -> offset this consumer started the batch at;
    ``next_offsets``: partition -> offset after the batch; ``messages``: the consumed
    records ``parsed`` came from, in the same order (their headers and values are what
    the signatures cover; rejected ones go to the dead-letter outbox as they are).
    """
    out = Outcome()
    stored = await db.lock_offsets(group, topic, sorted(expected))
    if any(stored.get(p) != o for p, o in expected.items()):
        raise Fenced(stored)

    checked = verify(parsed, messages, await db.producers())
    policy = await db.source_policy()
    events, out.rejected = authorize([p for p in checked if isinstance(p, Parsed)], policy)
    out.rejected += [p for p in checked if isinstance(p, Rejected)]
    known = await db.known_fingerprints([e.identity for e in events]) if events else {}
    cls = classify(events, known)
    out.rejected += cls.conflicts
    for ev in cls.duplicates:
        out.duplicates[ev.type] += 1

    if cls.new:
        if await db.insert_events(cls.new) != len(cls.new):
            raise ConcurrentWriter("event id inserted concurrently")
        by_plate: dict[str, list[Parsed]] = {}
        for ev in cls.new:
            by_plate.setdefault(ev.plate_key, []).append(ev)
        changes = await _fold_plates(db, by_plate, out, tz, now)
    else:
        changes = []

    if out.rejected:
        await db.insert_dlq(dead_letters(topic, out.rejected, messages))
    # Last: recording status changes takes a lock held to commit (their order is the
    # commit order), so concurrent batches wait on each other for the shortest time.
    await db.insert_status_changes(changes)
    await db.set_offsets(group, topic, next_offsets)
    return out


def dead_letters(topic: str, rejected: Sequence[Rejected],
                 messages: Sequence[Message]) -> list[DeadLetter]:
    """The dead-letter records of ``rejected``: each message's key, value and headers as
    consumed, and why."""
    by_position = {(m.partition, m.offset): m for m in messages}
    out = []
    for r in rejected:
        m = by_position[(r.partition, r.offset)]
        out.append(DeadLetter(topic=topic, partition=r.partition, offset=r.offset,
                              key=m.key, value=m.value, reason=r.reason, detail=r.detail,
                              original_headers=tuple(m.headers or ())))
    return out


async def _fold_plates(db: BatchStore, by_plate: dict[str, list[Parsed]],
                       out: Outcome, tz: dt.tzinfo, now: dt.datetime) -> list[StatusChange]:
    """Fold the batch's new events (already stored) into their plates; returns the status
    changes to record. A plate whose stored state or history cannot be folded is
    quarantined (its events stay stored, its state is left alone); every other plate
    goes on."""
    held = await db.lock_quarantined(list(by_plate))
    fold_now = {k: v for k, v in by_plate.items() if k not in held} if held else by_plate
    old = await db.lock_plates(list(fold_now))
    broken: dict[str, Unfoldable] = {}
    new_states, refold = plan_plates(old, fold_now, broken)
    if refold:
        out.refolded = len(refold)
        hist = await db.history(refold)
        for key in refold:
            first = fold_now[key][0]
            try:
                new_states[key] = fold_history(first.jurisdiction, first.plate, hist[key])
            except Unfoldable as exc:
                broken[key] = exc
    inserted = await db.upsert_plates(list(new_states.values()))
    if any(k not in old and k not in inserted for k in new_states):
        raise ConcurrentWriter("plate created concurrently")
    changes = status_changes(old, new_states, today_in(tz, now), now)
    out.status_changes = len(changes)
    # Owner notices of the applied events (contract section 4), in this transaction.
    out.notices = await db.record_notices(
        old, new_states, {k: v for k, v in fold_now.items() if k in new_states},
        {k: hist[k] for k in refold if k in new_states} if refold else {}, now)
    for key, events in by_plate.items():
        counter = out.applied if key in new_states else out.quarantined_events
        for ev in events:
            counter[ev.type] += 1
    if held or broken:
        out.quarantined = [exc.reason for exc in broken.values()]
        await db.quarantine([
            QuarantineRow(key, exc.reason, exc.event_id, len(by_plate[key]))
            for key, exc in broken.items()
        ] + [QuarantineRow(key, "", None, len(by_plate[key])) for key in held])
    return changes
