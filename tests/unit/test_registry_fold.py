"""Pure registry rules: the fold of every event type, order independence, batch planning."""

from __future__ import annotations

import datetime as dt
import pickle
import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from platereg.kafka import Record
from registry.consumer.batch import (
    CompactParsed,
    CompactRejected,
    Parsed,
    Rejected,
    classify,
    expand_compact,
    fold_history,
    parse_compact,
    parse_values,
    plan_plates,
    status_change,
    status_changes,
    view_of,
)
from registry.consumer.expiry import expiry_changes
from registry.domain import comparable, enforcement_view
from schemas.fold import HistoryEvent, PlateState, apply, fold

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
OWNER = {"owner_id": "o1", "name": "A Person", "email": "a@example.org"}
ISSUED = {"plate_class": "passenger", "expires_on": "2026-01-31",
          "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                      "colour": "blue"},
          "owner": OWNER}


def h(kind: str, minute: int, data: dict | None = None, id: str | None = None) -> HistoryEvent:
    return HistoryEvent(event_id=id or f"e{minute:04d}", type=kind,
                        time=T0 + dt.timedelta(minutes=minute), data=data or {})


def run(*events: HistoryEvent) -> PlateState:
    return fold("CA-ON", "ABC123", events)


def test_issued_sets_every_field_and_defaults_the_language() -> None:
    s = run(h("plate.issued", 1, ISSUED))
    assert s.issued and s.plate_class == "passenger"
    assert s.expires_on == dt.date(2026, 1, 31)
    assert s.owner == {**OWNER, "language": "en"} and s.owner_id == "o1"
    assert s.vehicle["make"] == "Honda" and s.device_id is None
    assert (s.event_count, s.last_event_id) == (1, "e0001")


def test_issued_clears_cancelled_but_not_stolen_or_suspensions() -> None:
    s = run(h("plate.issued", 1, ISSUED), h("plate.cancelled", 2, {"reason": "destroyed"}),
            h("plate.stolen_reported", 3, {"agency": "X", "report_id": "1"}),
            h("plate.suspended", 4, {"reason": "court_order"}),
            h("plate.issued", 5, {**ISSUED, "device_id": "d-1"}))
    assert not s.cancelled and s.stolen and s.suspension_reasons == ("court_order",)
    assert s.device_id == "d-1"


def test_renewed_suspended_and_reinstated_with_and_without_reason() -> None:
    s = run(h("plate.issued", 1, ISSUED), h("plate.renewed", 2, {"expires_on": "2027-01-31"}),
            h("plate.suspended", 3, {"reason": "unpaid_fines"}),
            h("plate.suspended", 4, {"reason": "insurance_lapsed"}),
            h("plate.suspended", 5, {"reason": "unpaid_fines"}))
    assert s.expires_on == dt.date(2027, 1, 31)
    assert s.suspension_reasons == ("insurance_lapsed", "unpaid_fines")
    one = apply(s, "plate.reinstated", {"reason": "unpaid_fines"}, T0 + dt.timedelta(hours=1),
                "z1")
    assert one.suspension_reasons == ("insurance_lapsed",)
    other = apply(s, "plate.reinstated", {"reason": "court_order"}, T0 + dt.timedelta(hours=1),
                  "z1")
    assert other.suspension_reasons == s.suspension_reasons
    everything = apply(s, "plate.reinstated", {}, T0 + dt.timedelta(hours=1), "z1")
    assert everything.suspension_reasons == ()


def test_stolen_recovered_transferred_owner_updated_cancelled_devices() -> None:
    s = run(h("plate.issued", 1, ISSUED),
            h("plate.stolen_reported", 2, {"agency": "OPP", "report_id": "r"}))
    assert s.stolen
    s = apply(s, "plate.recovered", {}, T0 + dt.timedelta(minutes=3), "e3")
    assert not s.stolen
    s = apply(s, "plate.transferred", {"owner": {"owner_id": "o2", "name": "B"}},
              T0 + dt.timedelta(minutes=4), "e4")
    assert s.owner == {"owner_id": "o2", "name": "B", "language": "en"}
    s = apply(s, "plate.owner_updated", {"language": "fr", "phone": "+15550001111"},
              T0 + dt.timedelta(minutes=5), "e5")
    assert s.owner == {"owner_id": "o2", "name": "B", "language": "fr", "phone": "+15550001111"}
    s = apply(s, "plate.device_paired", {"device_id": "dev"}, T0 + dt.timedelta(minutes=6), "e6")
    assert s.device_id == "dev"
    s = apply(s, "plate.device_unpaired", {}, T0 + dt.timedelta(minutes=7), "e7")
    assert s.device_id is None
    s = apply(s, "plate.cancelled", {"reason": "surrendered"}, T0 + dt.timedelta(minutes=8), "e8")
    assert s.cancelled and s.event_count == 8


def test_owner_updated_before_issued_is_overridden_by_the_issued_owner() -> None:
    s = run(h("plate.owner_updated", 1, {"name": "Early"}), h("plate.issued", 2, ISSUED))
    assert s.owner["name"] == "A Person"
    # ...and after the owner exists it applies, whatever the arrival order
    s2 = run(h("plate.owner_updated", 3, {"name": "Later"}), h("plate.issued", 2, ISSUED))
    assert s2.owner["name"] == "Later"


def test_events_before_issued_make_an_unknown_plate_with_state() -> None:
    s = run(h("plate.suspended", 1, {"reason": "court_order"}))
    assert not s.issued and s.suspension_reasons == ("court_order",)
    assert view_of(s, dt.date(2025, 1, 1), T0) is None


def test_same_time_is_ordered_by_id() -> None:
    a = h("plate.stolen_reported", 1, {"agency": "X", "report_id": "1"}, id="b")
    b = h("plate.recovered", 1, {}, id="a")
    assert run(h("plate.issued", 0, ISSUED), a, b).stolen      # "b" folds after "a"
    assert run(b, a, h("plate.issued", 0, ISSUED)).last_event_id == "b"


KINDS = [
    ("plate.issued", ISSUED), ("plate.renewed", {"expires_on": "2030-05-05"}),
    ("plate.suspended", {"reason": "court_order"}), ("plate.suspended", {"reason": "unpaid_fines"}),
    ("plate.reinstated", {"reason": "court_order"}), ("plate.reinstated", {}),
    ("plate.stolen_reported", {"agency": "A", "report_id": "r"}), ("plate.recovered", {}),
    ("plate.transferred", {"owner": {"owner_id": "o9", "name": "N"}}),
    ("plate.owner_updated", {"email": "x@example.org"}),
    ("plate.cancelled", {"reason": "replaced"}),
    ("plate.device_paired", {"device_id": "d"}), ("plate.device_unpaired", {}),
]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, len(KINDS) - 1), st.integers(0, 20)), min_size=1,
                max_size=25, unique_by=lambda t: t), st.randoms())
def test_fold_is_the_same_for_any_permutation(picks, rnd) -> None:
    events = [h(KINDS[k][0], minute, KINDS[k][1], id=f"id{i:03d}")
              for i, (k, minute) in enumerate(picks)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert run(*events) == run(*shuffled)


def _parsed(kind: str, minute: int, data: dict, id: str, key: str = "CA-ON/ABC123",
            fp: str | None = None, offset: int = 0, source: str = "/src") -> Parsed:
    j, _, p = key.partition("/")
    return Parsed(id, kind, source, T0 + dt.timedelta(minutes=minute), key, j, p, data,
                  fp or f"fp-{id}-{orjson.dumps(data).decode()}", 0, offset)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, len(KINDS) - 1), st.integers(0, 30)), min_size=1,
                max_size=20, unique_by=lambda t: t), st.integers(0, 19), st.randoms())
def test_incremental_batches_equal_the_full_fold(picks, split, rnd) -> None:
    """Two batches through the consumer's own steps (plan_plates, then fold_history of the
    stored rows when an event is late) give the reference fold of every event."""
    events = [_parsed(KINDS[k][0], m, KINDS[k][1], f"id{i:03d}") for i, (k, m) in enumerate(picks)]
    rnd.shuffle(events)
    first, second = events[:split], events[split:]
    key = "CA-ON/ABC123"
    old: dict[str, PlateState] = {}
    if first:
        old, refold = plan_plates({}, {key: first})
        assert refold == []                       # a new plate never needs a re-fold
    if second:
        states, refold = plan_plates(old, {key: second})
        late = bool(first) and min(e.sort_key for e in second) <= max(e.sort_key for e in first)
        assert refold == ([key] if late else [])
        stored = [e.history() for e in events]    # the store's rows, in no particular order
        rnd.shuffle(stored)
        for k in refold:                          # as the consumer re-folds a late plate
            states[k] = fold_history(second[0].jurisdiction, second[0].plate, stored)
        final = states[key]
    else:
        final = old[key]
    reference = PlateState(jurisdiction="CA-ON", plate="ABC123")
    for ev in sorted(events, key=lambda e: e.sort_key):
        reference = apply(reference, ev.type, ev.data, ev.time, ev.event_id)
    assert final == reference


def test_plan_refolds_only_when_an_event_is_not_after_the_last_applied() -> None:
    state = fold("CA-ON", "ABC123", [h("plate.issued", 10, ISSUED, id="m")])
    later = _parsed("plate.renewed", 11, {"expires_on": "2031-01-01"}, "n")
    same_time_smaller_id = _parsed("plate.renewed", 10, {"expires_on": "2031-01-01"}, "a")
    _, refold = plan_plates({"CA-ON/ABC123": state}, {"CA-ON/ABC123": [later]})
    assert refold == []
    _, refold = plan_plates({"CA-ON/ABC123": state}, {"CA-ON/ABC123": [later,
                                                                         same_time_smaller_id]})
    assert refold == ["CA-ON/ABC123"]


def test_classify_duplicates_and_conflicts_inside_a_batch_and_against_history() -> None:
    a = _parsed("plate.recovered", 1, {}, "A", fp="f1", offset=1)
    a_again = _parsed("plate.recovered", 1, {}, "A", fp="f1", offset=2)
    a_conflict = _parsed("plate.recovered", 2, {}, "A", fp="f2", offset=3)
    b_known = _parsed("plate.recovered", 1, {}, "B", fp="fb", offset=4)
    c_conflict_known = _parsed("plate.recovered", 1, {}, "C", fp="other", offset=5)
    known = {("/src", "B"): "fb", ("/src", "C"): "fc"}
    out = classify([a, a_again, a_conflict, b_known, c_conflict_known], known)
    assert out.new == [a]
    assert out.duplicates == [a_again, b_known]
    assert [(r.offset, r.reason) for r in out.conflicts] == [(3, "id_conflict"),
                                                             (5, "id_conflict")]
    # the first of an id within the batch stands, even when it is the "other" content
    out = classify([a_conflict, a], {})
    assert out.new == [a_conflict] and out.conflicts[0].offset == 1


def test_classify_the_same_id_from_two_sources_is_two_events() -> None:
    police = _parsed("plate.recovered", 1, {}, "A", fp="f1", offset=1, source="/police/x/")
    office = _parsed("plate.renewed", 2, {"expires_on": "2030-01-01"}, "A", fp="f2", offset=2,
                     source="/registry/1")
    stored_elsewhere = _parsed("plate.recovered", 3, {}, "B", fp="f3", offset=3,
                               source="/police/x/")
    out = classify([police, office, stored_elsewhere], {("/police/y/", "B"): "other"})
    assert out.new == [police, office, stored_elsewhere]
    assert out.duplicates == [] and out.conflicts == []


def test_fold_order_breaks_time_and_id_ties_by_source() -> None:
    issued = h("plate.issued", 0, ISSUED, id="i")
    stolen = HistoryEvent("x", "plate.stolen_reported", T0, {"agency": "A", "report_id": "1"},
                          source="/police/b/")
    recovered = HistoryEvent("x", "plate.recovered", T0, {}, source="/police/a/")
    for order in ([issued, stolen, recovered], [recovered, stolen, issued]):
        state = fold("CA-ON", "ABC123", order)
        assert state.stolen          # (T0, "x", "/police/a/") folds before "/police/b/"


def test_plan_refolds_an_equal_time_and_id_from_another_source() -> None:
    state = fold("CA-ON", "ABC123", [h("plate.issued", 10, ISSUED, id="m")])
    twin = _parsed("plate.renewed", 10, {"expires_on": "2031-01-01"}, "m", source="/a")
    _, refold = plan_plates({"CA-ON/ABC123": state}, {"CA-ON/ABC123": [twin]})
    assert refold == ["CA-ON/ABC123"]


def test_status_change_ignores_as_of_and_owner_and_skips_unknown_plates() -> None:
    today = dt.date(2025, 6, 1)
    s = fold("CA-ON", "ABC123", [h("plate.issued", 1, ISSUED)])
    s2 = apply(s, "plate.owner_updated", {"name": "Other"}, T0 + dt.timedelta(minutes=2), "z")
    assert status_changes({"k": s}, {"k": s2}, today, T0) == []
    v1 = enforcement_view(s, today=today, as_of=T0)
    v2 = enforcement_view(s, today=today, as_of=T0 + dt.timedelta(days=1))
    assert comparable(v1) == comparable(v2) and status_change(v1, v2, "k") is None
    s3 = apply(s, "plate.stolen_reported", {"agency": "A", "report_id": "r"},
               T0 + dt.timedelta(minutes=3), "y")
    (change,) = status_changes({"k": s}, {"k": s3}, today, T0)
    assert change.flagged and not change.was_flagged and change.view["status"] == "stolen"
    assert "owner" not in change.view
    (new_plate,) = status_changes({}, {"k": s}, today, T0)
    assert new_plate.view["status"] == "valid" and not new_plate.was_flagged
    unknown = fold("CA-ON", "ABC123", [h("plate.suspended", 1, {"reason": "court_order"})])
    assert status_changes({}, {"k": unknown}, today, T0) == []


def test_expiry_changes_only_when_the_last_recorded_view_differs() -> None:
    s = fold("CA-ON", "ABC123", [h("plate.issued", 1, ISSUED)])      # expires 2026-01-31
    before = enforcement_view(s, today=dt.date(2026, 1, 31), as_of=T0)
    after_day = dt.date(2026, 2, 1)
    (change,) = expiry_changes([(s, before)], after_day, T0)
    assert change.view["flags"] == ["expired"] and change.flagged and not change.was_flagged
    recorded = enforcement_view(s, today=after_day, as_of=T0)
    assert expiry_changes([(s, recorded)], after_day, T0) == []


def _raw(ev: dict) -> bytes:
    return orjson.dumps(ev)


def test_parse_values_and_the_compact_worker_form_agree() -> None:
    good = {"specversion": "1.0", "id": "id-1", "source": "/s", "type": "plate.renewed",
            "time": "2025-01-01T10:00:00.123456-05:00", "subject": "ca-on/abc-123",
            "data": {"expires_on": "2026-01-01"}}
    values = [_raw(good), b"nope", None, _raw({**good, "type": "plate.x"}),
              _raw({**good, "subject": "CA-ON/!!"}), b"x" * 70_000]
    records = [Record(None, v, 3, 10 + i) for i, v in enumerate(values)]
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    direct = parse_values(records, now)
    # the worker's answer crosses the process pool pickled: the named tuples survive it
    sent = pickle.loads(pickle.dumps(parse_compact(values, now)))  # noqa: S301 - our bytes
    assert [type(c) for c in sent] == [CompactParsed] + [CompactRejected] * 5
    compact = expand_compact(sent, records)
    assert direct == compact
    ok = direct[0]
    assert isinstance(ok, Parsed) and ok.plate_key == "CA-ON/ABC123" and ok.plate == "ABC123"
    assert ok.time == dt.datetime(2025, 1, 1, 15, 0, 0, 123456, tzinfo=dt.UTC)
    assert [(r.reason, r.type_label) for r in direct[1:]] == [
        ("malformed_json", "invalid"), ("malformed_json", "invalid"),
        ("unknown_type", "invalid"), ("invalid_plate", "plate.renewed"),
        ("too_large", "invalid")]
    assert all(isinstance(r, Rejected) and r.offset == 11 + i for i, r in enumerate(direct[1:]))


def test_rejection_details_and_labels_never_carry_the_plate() -> None:
    bad = {"specversion": "1.0", "id": "i", "source": "/s", "type": "plate.renewed",
           "time": "2025-01-01T00:00:00Z", "subject": "CA-ON/SECRET9!",
           "data": {"expires_on": "2026-01-01"}}
    (rej,) = parse_values([Record(None, _raw(bad), 0, 0)], T0)
    assert isinstance(rej, Rejected) and "SECRET" not in rej.detail


def test_random_batches_never_raise() -> None:
    rng = random.Random(1)
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 50))) for _ in range(200)]
    out = parse_values([Record(None, v, 0, i) for i, v in enumerate(junk)], T0)
    assert all(isinstance(o, Rejected) for o in out)


def test_compact_form_carries_the_data_json_the_store_would_write() -> None:
    good = {"specversion": "1.0", "id": "id-1", "source": "/s", "type": "plate.issued",
            "time": "2025-01-01T10:00:00Z", "subject": "ca-on/abc-123",
            "data": {"plate_class": "passenger", "expires_on": "2026-01-01",
                     "vehicle": {"vin": "1FAHP3F20CL000001", "make": "Ford",
                                 "model": "Fiesta", "year": 2019, "colour": "bleu ciel é"},
                     "owner": {"owner_id": "o-1", "name": "Zoë"}}}
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    values = [_raw(good)]
    (ev,) = expand_compact(parse_compact(values, now), [Record(None, values[0], 0, 0)])
    (direct,) = parse_values([Record(None, values[0], 0, 0)], now)
    assert isinstance(ev, Parsed) and isinstance(direct, Parsed)
    assert direct.data_json is None and ev == direct
    assert ev.data_json == orjson.dumps(ev.data).decode() == orjson.dumps(direct.data).decode()
