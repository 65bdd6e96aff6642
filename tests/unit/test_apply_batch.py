"""registry.consumer.apply.apply_batch over an in-memory BatchStore: duplicates, conflicts, late
events, fencing and concurrent writers, without servers (the integration tests run the
same use case on PostgreSQL and Kafka)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import orjson
import pytest

from platereg.dead_letter import DeadLetter
from platereg.kafka import Record
from platereg.security.producer_store import Producer, Producers
from registry.consumer.apply import BatchStore, ConcurrentWriter, Fenced, apply_batch
from registry.consumer.batch import (
    STORED_TIME_REASON,
    Parsed,
    Rejected,
    StatusChange,
    parse_value,
)
from registry.consumer.store import SqlStore
from schemas.fold import HistoryEvent, PlateState, fold
from schemas.policy import DEFAULT_POLICY, KNOWN_TYPES, Policy, check_grant, compile_policy
from schemas.signing import Signer

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
TZ = ZoneInfo("America/Toronto")
GROUP, TOPIC = "g", "t.plates.events"
SIGNER = Signer.of("unit", "u" * 43)
ISSUED = {"plate_class": "passenger", "expires_on": "2030-01-31",
          "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                      "colour": "blue"},
          "owner": {"owner_id": "o1", "name": "A Person", "email": "a@example.org"}}


class MemoryStore:
    """A BatchStore in dictionaries, with the same contract as registry.consumer.store.SqlStore."""

    def __init__(self, offsets: Mapping[int, int]) -> None:
        self.offsets = dict(offsets)
        self.events: dict[tuple[str, str], Parsed] = {}
        self.plates: dict[str, PlateState] = {}
        self.changes: list[StatusChange] = []
        self.dlq: list[DeadLetter] = []
        self.quarantined: dict[str, tuple[str, str | None, int]] = {}
        self.steal_event_ids: set[str] = set()   # a concurrent writer stores these first
        self.notices_for: list[set[str]] = []    # plates each record_notices call was about
        self.notice_calls: list[tuple] = []      # (old, new_states, history, now) of each
        self.offset_calls: list[tuple[str, str, str]] = []   # (operation, group, topic)
        self.quarantine_rows: list[tuple] = []   # as given to quarantine()

    async def lock_offsets(self, group: str, topic: str,
                           partitions: Sequence[int]) -> dict[int, int]:
        self.offset_calls.append(("lock", group, topic))
        return {p: self.offsets[p] for p in partitions if p in self.offsets}

    async def source_policy(self) -> Policy:
        return compile_policy(check_grant("/", kind, None) for kind in KNOWN_TYPES)

    async def producers(self) -> Producers:
        return Producers({"unit": Producer("unit", ("/",), (SIGNER.key,))}, 1)

    async def known_fingerprints(self, ids: Sequence[tuple[str, str]]
                                 ) -> dict[tuple[str, str], str]:
        return {i: self.events[i].fingerprint for i in ids if i in self.events}

    async def insert_events(self, events: Sequence[Parsed]) -> int:
        fresh = [e for e in events
                 if e.identity not in self.events and e.event_id not in self.steal_event_ids]
        self.events.update((e.identity, e) for e in fresh)
        return len(fresh)

    async def lock_quarantined(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if k in self.quarantined}

    async def quarantine(self, rows: Sequence[tuple[str, str, str | None, int]]) -> None:
        self.quarantine_rows.extend(tuple(r) for r in rows)
        for key, reason, event_id, held in rows:
            first = self.quarantined.get(key, (reason, event_id, 0))
            self.quarantined[key] = (first[0], first[1], first[2] + held)

    async def lock_plates(self, keys: Sequence[str]) -> dict[str, PlateState]:
        return {k: self.plates[k] for k in keys if k in self.plates}

    async def history(self, keys: Sequence[str]) -> dict[str, list[HistoryEvent]]:
        return {k: [e.history() for e in self.events.values() if e.plate_key == k]
                for k in keys}

    async def upsert_plates(self, states: Sequence[PlateState]) -> set[str]:
        inserted = {s.plate_key for s in states if s.plate_key not in self.plates}
        self.plates.update((s.plate_key, s) for s in states)
        return inserted

    async def insert_status_changes(self, changes: Sequence[StatusChange]) -> None:
        self.changes.extend(changes)

    async def insert_dlq(self, letters: Sequence[DeadLetter]) -> None:
        self.dlq.extend(letters)

    async def set_offsets(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        self.offset_calls.append(("set", group, topic))
        if any(self.offsets.get(p, o) >= o or p not in self.offsets
               for p, o in offsets.items()):
            raise Fenced({p: self.offsets[p] for p in offsets if p in self.offsets})
        self.offsets.update(offsets)

    async def record_notices(self, old: Mapping[str, PlateState | None],
                             new_states: Mapping[str, PlateState],
                             by_plate: Mapping[str, Sequence[Parsed]],
                             history: Mapping[str, Sequence[HistoryEvent]],
                             now: dt.datetime) -> Counter:
        self.notices_for.append(set(by_plate))
        self.notice_calls.append((dict(old), dict(new_states), dict(history), now))
        return Counter()


def _operations(cls: type) -> dict[str, list[str]]:
    """The coroutine methods ``cls`` has (inherited ones too), by name: their parameters."""
    return {name: list(inspect.signature(getattr(cls, name)).parameters)
            for name in dir(cls) if inspect.iscoroutinefunction(getattr(cls, name))}


def test_the_stores_offer_the_protocol_as_declared() -> None:
    """BatchStore and the SQL store's methods are the two declarations of the store's
    operations: every one of the protocol, with the same parameters, in both stores."""
    declared = _operations(BatchStore)
    assert len(declared) == 14
    for store in (SqlStore, MemoryStore):
        offered = _operations(store)
        assert {name: offered.get(name) for name in declared} == declared, store


def _value(id: str, kind: str, minute: int, data: dict | None = None,
           plate: str = "CA-ON/ABC123", source: str = "/test",
           base: dt.datetime = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": id, "source": source, "type": kind, "subject": plate,
        "time": (base + dt.timedelta(minutes=minute)).isoformat(), "data": data or {}})


async def _apply(db: BatchStore, values: list[bytes | None], start: int = 0,
                 partition: int = 0, expected: int | None = None, now: dt.datetime = NOW):
    parsed: list[Parsed | Rejected] = [
        parse_value(v, partition, start + i, now, producer="unit") for i, v in enumerate(values)]
    messages = [Record(b"key", v, partition, start + i, tuple(SIGNER.headers(v)))
                for i, v in enumerate(values)]
    return await apply_batch(
        db, group=GROUP, topic=TOPIC,
        expected={partition: start if expected is None else expected},
        next_offsets={partition: start + len(values)}, parsed=parsed, messages=messages,
        tz=TZ, now=now)


async def test_new_events_fold_into_the_plate_record_a_change_and_move_the_offset() -> None:
    db = MemoryStore({0: 0})
    out = await _apply(db, [_value("e1", "plate.issued", 1, ISSUED),
                            _value("e2", "plate.stolen_reported", 2,
                                   {"agency": "OPP", "report_id": "r1"})])
    assert dict(out.applied) == {"plate.issued": 1, "plate.stolen_reported": 1}
    state = db.plates["CA-ON/ABC123"]
    assert state.issued and state.stolen and state.event_count == 2
    assert [(c.plate_key, c.view["status"], c.flagged, c.was_flagged) for c in db.changes] == [
        ("CA-ON/ABC123", "stolen", True, False)]
    assert db.offsets == {0: 2}
    assert db.notices_for == [{"CA-ON/ABC123"}]   # in the same transaction


async def test_a_duplicate_is_counted_and_changes_nothing() -> None:
    db = MemoryStore({0: 0})
    first = _value("e1", "plate.issued", 1, ISSUED)
    await _apply(db, [first])
    before = (dict(db.plates), list(db.changes))
    out = await _apply(db, [first], start=1)
    assert dict(out.duplicates) == {"plate.issued": 1} and not out.applied
    assert (dict(db.plates), list(db.changes)) == before
    assert db.offsets == {0: 2} and db.dlq == []


async def test_same_id_other_content_is_an_id_conflict_in_the_dlq_with_its_bytes() -> None:
    db = MemoryStore({0: 0})
    await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    other = _value("e1", "plate.renewed", 5, {"expires_on": "2031-01-31"})
    out = await _apply(db, [other, None], start=1)
    assert sorted((r.offset, r.reason) for r in out.rejected) == [
        (1, "id_conflict"), (2, "malformed_json")]
    dlq = {d.offset: (d.topic, d.partition, d.offset, d.key, d.value, d.reason)
           for d in db.dlq}
    assert dlq[1] == (TOPIC, 0, 1, b"key", other, "id_conflict")
    assert dlq[2] == (TOPIC, 0, 2, b"key", None, "malformed_json")
    assert db.plates["CA-ON/ABC123"].expires_on == dt.date(2030, 1, 31)
    assert db.offsets == {0: 3}


async def test_a_late_event_refolds_the_plate_from_its_history() -> None:
    db = MemoryStore({0: 0})
    issued = _value("e1", "plate.issued", 1, ISSUED)
    suspended = _value("e3", "plate.suspended", 30, {"reason": "unpaid_fines"})
    await _apply(db, [issued, suspended])
    late = _value("e2", "plate.renewed", 10, {"expires_on": "2031-01-31"})
    out = await _apply(db, [late], start=2)
    assert out.refolded == 1
    history = [p.history() for p in db.events.values()]
    assert db.plates["CA-ON/ABC123"] == fold("CA-ON", "ABC123", history)
    assert db.plates["CA-ON/ABC123"].last_event_id == "e3"   # still the latest in time
    assert db.plates["CA-ON/ABC123"].expires_on == dt.date(2031, 1, 31)


async def test_a_fenced_batch_writes_nothing() -> None:
    db = MemoryStore({0: 5})   # another consumer already stored offset 5
    with pytest.raises(Fenced) as fenced:
        await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)], start=3, expected=3)
    assert fenced.value.stored == {0: 5}
    assert (db.events, db.plates, db.changes, db.dlq, db.offsets) == ({}, {}, [], [], {0: 5})


async def test_offsets_stored_past_the_batch_meanwhile_abort_it() -> None:
    """The guard behind the fence: a batch whose offsets would move a stored offset back
    (or leave it where it is) raises Fenced from set_offsets, after which the caller rolls
    the whole transaction back."""
    class Overtaken(MemoryStore):
        async def insert_status_changes(self, changes: Sequence[StatusChange]) -> None:
            self.offsets[0] = 9   # another consumer stored further while this batch ran

    db = Overtaken({0: 0})
    with pytest.raises(Fenced) as fenced:
        await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    assert fenced.value.stored == {0: 9} and db.offsets == {0: 9}
    with pytest.raises(Fenced):
        await MemoryStore({0: 1}).set_offsets(GROUP, TOPIC, {0: 1})   # not forward either


async def test_an_event_stored_concurrently_aborts_the_batch() -> None:
    db = MemoryStore({0: 0})
    db.steal_event_ids = {"e1"}
    with pytest.raises(ConcurrentWriter):
        await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    assert db.offsets == {0: 0}


async def test_a_quarantined_plate_keeps_its_state_and_counts_the_held_events() -> None:
    db = MemoryStore({0: 0})
    await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    db.quarantined["CA-ON/ABC123"] = ("bad_history", "e0", 0)
    before = db.plates["CA-ON/ABC123"]
    out = await _apply(db, [_value("e2", "plate.stolen_reported", 2,
                                   {"agency": "OPP", "report_id": "r1"}),
                            _value("e3", "plate.issued", 3, ISSUED, plate="CA-ON/XYZ9")],
                       start=1)
    assert dict(out.quarantined_events) == {"plate.stolen_reported": 1}
    assert dict(out.applied) == {"plate.issued": 1}
    assert db.plates["CA-ON/ABC123"] == before and ("/test", "e2") in db.events
    assert db.quarantined["CA-ON/ABC123"] == ("bad_history", "e0", 1)
    assert db.plates["CA-ON/XYZ9"].issued and db.offsets == {0: 3}
    assert db.notices_for[-1] == {"CA-ON/XYZ9"}   # none for the held plate


# Edges `make mutate` found no test looking at: what the batch hands the store (group and
# topic, the arguments of record_notices, the quarantine rows), counts of several events
# of one type, the registry's time zone for today's date, and a broken plate quarantined
# rather than failing the batch.

STOLEN = {"agency": "OPP", "report_id": "r1"}


async def test_the_batch_names_its_group_and_topic_and_counts_each_event() -> None:
    db = MemoryStore({0: 0})
    renew = [_value(f"r{i}", "plate.renewed", 10 + i, {"expires_on": f"203{i}-01-31"})
             for i in (1, 2)]
    out = await _apply(db, [_value("e1", "plate.issued", 1, ISSUED), *renew])
    assert db.offset_calls == [("lock", GROUP, TOPIC), ("set", GROUP, TOPIC)]
    assert dict(out.applied) == {"plate.issued": 1, "plate.renewed": 2}
    assert out.status_changes == 1
    [(old, new_states, history, now)] = db.notice_calls
    assert (old, new_states, history, now) == ({}, db.plates, {}, NOW)
    dupes = await _apply(db, [renew[0], renew[1], renew[0]], start=3)
    assert dict(dupes.duplicates) == {"plate.renewed": 3}


async def test_unauthorized_and_malformed_records_are_all_dead_lettered_with_details() -> None:
    class Default(MemoryStore):
        async def source_policy(self) -> Policy:
            return compile_policy(DEFAULT_POLICY)

    class NoLookups(Default):
        async def known_fingerprints(self, ids):
            raise AssertionError("a batch without events has no fingerprints to read")

    db = NoLookups({0: 0})
    out = await _apply(db, [_value("e1", "plate.stolen_reported", 1, STOLEN), None])
    assert sorted(r.reason for r in out.rejected) == ["malformed_json", "unauthorized_source"]
    assert sorted((d.offset, d.reason, d.detail) for d in db.dlq) == sorted(
        (r.offset, r.reason, r.detail) for r in out.rejected)
    assert all(d.detail for d in db.dlq) and db.offsets == {0: 2}


async def test_writers_that_race_the_batch_are_named_in_the_error() -> None:
    class PlateRace(MemoryStore):
        async def upsert_plates(self, states: Sequence[PlateState]) -> set[str]:
            await super().upsert_plates(states)
            return set()   # another transaction inserted the plate first

    db = MemoryStore({0: 0})
    db.steal_event_ids = {"e1"}
    with pytest.raises(ConcurrentWriter, match="^event id inserted concurrently$"):
        await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    with pytest.raises(ConcurrentWriter, match="^plate created concurrently$"):
        await _apply(PlateRace({0: 0}), [_value("e1", "plate.issued", 1, ISSUED)])


async def test_today_is_the_registry_time_zone_date_of_the_batch() -> None:
    """At 21:00 in Toronto on the day a plate expires (02:00 UTC the next day, and long
    before the real clock's today) the plate is still valid."""
    now = dt.datetime(2020, 2, 1, 2, tzinfo=dt.UTC)
    db = MemoryStore({0: 0})
    issued = {**ISSUED, "expires_on": "2020-01-31"}
    await _apply(db, [_value("e1", "plate.issued", 0, issued,
                             base=dt.datetime(2020, 1, 15, tzinfo=dt.UTC))], now=now)
    assert [(c.view["status"], c.flagged) for c in db.changes] == [("valid", False)]


async def test_a_late_event_gives_the_notices_the_history_it_refolded() -> None:
    db = MemoryStore({0: 0})
    await _apply(db, [_value("e1", "plate.issued", 1, ISSUED),
                      _value("e3", "plate.suspended", 30, {"reason": "unpaid_fines"})])
    await _apply(db, [_value("e2", "plate.renewed", 10, {"expires_on": "2031-01-31"})],
                 start=2)
    history = db.notice_calls[-1][2]
    assert sorted(e.event_id for e in history["CA-ON/ABC123"]) == ["e1", "e2", "e3"]


async def test_a_plate_whose_stored_state_is_broken_is_quarantined_not_the_batch() -> None:
    db = MemoryStore({0: 0})
    await _apply(db, [_value("e1", "plate.issued", 1, ISSUED)])
    db.plates["CA-ON/ABC123"] = dataclasses.replace(db.plates["CA-ON/ABC123"], plate_class=5)
    out = await _apply(db, [_value("e2", "plate.stolen_reported", 2, STOLEN),
                            _value("e3", "plate.stolen_reported", 3, STOLEN)], start=1)
    reason = "stored plate_class has the wrong type"
    assert out.quarantined == [reason]
    assert db.quarantine_rows == [("CA-ON/ABC123", reason, "e1", 2)]
    assert dict(out.quarantined_events) == {"plate.stolen_reported": 2}
    held = await _apply(db, [_value("e4", "plate.recovered", 4)], start=3)
    assert db.quarantine_rows[-1] == ("CA-ON/ABC123", "", None, 1)
    assert held.quarantined == [] and db.offsets == {0: 4}


async def test_a_history_that_cannot_be_refolded_quarantines_the_plate() -> None:
    class BadRow(MemoryStore):
        async def history(self, keys: Sequence[str]) -> dict[str, list[HistoryEvent]]:
            out = await super().history(keys)
            bad = HistoryEvent("bad", "plate.renewed", dt.datetime(1, 1, 1, tzinfo=dt.UTC))
            return {k: [*v, bad] for k, v in out.items()}

    db = BadRow({0: 0})
    await _apply(db, [_value("e1", "plate.issued", 5, ISSUED)])
    out = await _apply(db, [_value("e0", "plate.renewed", 1, {"expires_on": "2031-01-31"})],
                       start=1)
    assert out.quarantined == [STORED_TIME_REASON]
    assert db.quarantine_rows == [("CA-ON/ABC123", STORED_TIME_REASON, "bad", 1)]
    assert db.plates["CA-ON/ABC123"].last_event_id == "e1" and db.offsets == {0: 2}
