"""Edges of the fold that `make mutate` found no test looking at: the exact values of the
flags (False, not merely falsy), every owner field an update may change and none other,
dates given as dates, the error an unknown type raises, and ``fold_until``'s plate."""

from __future__ import annotations

import datetime as dt

import pytest

from schemas.fold import HistoryEvent, PlateState, apply, fold, fold_until

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
OWNER = {"owner_id": "o1", "name": "A Person", "email": "a@example.org"}
ISSUED = {"plate_class": "passenger", "expires_on": "2026-01-31",
          "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                      "colour": "blue"}, "owner": OWNER}


def h(kind: str, minute: int, data: dict | None = None) -> HistoryEvent:
    return HistoryEvent(event_id=f"e{minute:04d}", type=kind,
                        time=T0 + dt.timedelta(minutes=minute), data=data or {})


def test_flags_cleared_by_issued_and_recovered_are_false_not_just_falsy() -> None:
    s = fold("CA-ON", "F1", [h("plate.issued", 1, ISSUED), h("plate.cancelled", 2),
                             h("plate.stolen_reported", 3), h("plate.issued", 4, ISSUED),
                             h("plate.recovered", 5)])
    assert s.cancelled is False and s.stolen is False and s.issued is True


def test_owner_updated_changes_each_contact_field_and_nothing_else() -> None:
    address = {"lines": ["1 Main St"], "city": "Ottawa", "region": "ON",
               "postal_code": "K1A 0A1", "country": "CA"}
    s = fold("CA-ON", "F2", [h("plate.issued", 1, ISSUED), h("plate.owner_updated", 2, {
        "name": "B Person", "email": "b@example.org", "phone": "+15550001111",
        "language": "fr", "address": address, "owner_id": "someone-else"})])
    assert s.owner == {"owner_id": "o1", "name": "B Person", "email": "b@example.org",
                       "phone": "+15550001111", "language": "fr", "address": address}


def test_a_date_may_be_given_as_a_date() -> None:
    state = apply(PlateState("CA-ON", "F3"), "plate.renewed",
                  {"expires_on": dt.date(2030, 5, 1)}, T0, "e1")
    assert state.expires_on == dt.date(2030, 5, 1)


def test_an_unknown_type_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown event type 'plate.melted'"):
        apply(PlateState("CA-ON", "F4"), "plate.melted", {}, T0, "e1")


def test_fold_until_keeps_the_plate_it_folds() -> None:
    s = fold_until("CA-QC", "F5", [h("plate.issued", 1, ISSUED), h("plate.cancelled", 9)],
                   T0 + dt.timedelta(minutes=5))
    assert (s.jurisdiction, s.plate, s.cancelled) == ("CA-QC", "F5", False)
