"""Edges of the consumer's pure batch steps that `make mutate` found no test looking at:
the exact rejection an unauthorized source or an id conflict gets (reason from the
event's data, detail, position and type), the event id a broken stored state names,
a re-fold that does not stop the plates after it, and each vehicle field that makes a
status change."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from registry.consumer.batch import (
    Parsed,
    Rejected,
    Unfoldable,
    authorize,
    check_state,
    classify,
    plan_plates,
    status_changes,
)
from schemas.fold import PlateState
from schemas.policy import DEFAULT_POLICY, compile_policy

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
TODAY = dt.date(2025, 6, 1)
VEHICLE = {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019, "colour": "blue"}
ISSUED = {"plate_class": "passenger", "expires_on": "2030-01-31", "vehicle": VEHICLE,
          "owner": {"owner_id": "o1", "name": "A Person", "email": "a@example.org"}}


def ev(event_id: str, kind: str, data: dict | None = None, *, source: str = "/registry/1",
       minute: int = 1, plate: str = "ABC123", partition: int = 0, offset: int = 0,
       fingerprint: str = "fp") -> Parsed:
    return Parsed(event_id, kind, source, T0 + dt.timedelta(minutes=minute), f"CA-ON/{plate}",
                  "CA-ON", plate, data or {}, fingerprint, partition, offset)


def test_authorize_judges_the_reason_in_the_data_and_names_what_was_refused() -> None:
    policy = compile_policy(DEFAULT_POLICY)
    fines = ev("e1", "plate.suspended", {"reason": "unpaid_fines"}, source="/fines/toronto",
               offset=1)
    court = ev("e2", "plate.suspended", {"reason": "court_order"}, source="/fines/toronto",
               partition=2, offset=7)
    allowed, refused = authorize([fines, court], policy)
    assert allowed == [fines]
    assert refused == [Rejected(
        2, 7, "unauthorized_source",
        "source: the source policy does not allow this source to send plate.suspended "
        "with reason court_order", "plate.suspended")]


def test_an_id_conflict_names_its_record_and_type() -> None:
    first = ev("e1", "plate.issued", ISSUED, fingerprint="fp-a")
    other = ev("e1", "plate.renewed", {"expires_on": "2031-01-31"}, fingerprint="fp-b",
               partition=3, offset=9)
    out = classify([other], {first.identity: first.fingerprint})
    assert out.new == [] and out.duplicates == []
    assert out.conflicts == [Rejected(
        3, 9, "id_conflict",
        "id: an event with this source and id and different content was accepted first",
        "plate.renewed")]


def test_a_stored_state_of_the_wrong_shape_names_the_field_and_a_text_event_id() -> None:
    state = PlateState("CA-ON", "S1", issued=True, last_event_time=T0)
    with pytest.raises(Unfoldable) as bad_id:
        check_state(dataclasses.replace(state, last_event_id=5))
    assert (bad_id.value.reason, bad_id.value.event_id) == (
        "stored last_event_id has the wrong type", None)
    with pytest.raises(Unfoldable) as bad_class:
        check_state(dataclasses.replace(state, plate_class=5, last_event_id="e9"))
    assert (bad_class.value.reason, bad_class.value.event_id) == (
        "stored plate_class has the wrong type", "e9")


def test_a_plate_to_refold_does_not_stop_the_plates_after_it() -> None:
    stored = PlateState("CA-ON", "LATE", issued=True, last_event_time=T0 + dt.timedelta(
        minutes=30), last_event_id="e30", event_count=3)
    new = {"CA-ON/LATE": [ev("e5", "plate.renewed", {"expires_on": "2031-01-31"}, minute=5,
                             plate="LATE")],
           "CA-ON/NEXT": [ev("n1", "plate.issued", ISSUED, plate="NEXT")]}
    states, refold = plan_plates({"CA-ON/LATE": stored}, new)
    assert refold == ["CA-ON/LATE"]
    assert list(states) == ["CA-ON/NEXT"] and states["CA-ON/NEXT"].issued


def test_a_newly_valid_plate_is_a_change_that_is_not_flagged() -> None:
    state = PlateState("CA-ON", "V1", issued=True, expires_on=dt.date(2030, 1, 31),
                       vehicle=VEHICLE, last_event_time=T0, last_event_id="e1")
    [change] = status_changes({}, {"CA-ON/V1": state}, TODAY, T0)
    assert (change.view["status"], change.flagged, change.was_flagged) == (
        "valid", False, False)


@pytest.mark.parametrize("field,value", [
    ("make", "Toyota"), ("model", "Accord"), ("year", 2020), ("colour", "red")])
def test_each_vehicle_field_the_view_shows_makes_a_status_change(field: str,
                                                                 value: object) -> None:
    before = PlateState("CA-ON", "V2", issued=True, expires_on=dt.date(2030, 1, 31),
                        vehicle=VEHICLE, last_event_time=T0, last_event_id="e1")
    after = dataclasses.replace(before, vehicle={**VEHICLE, field: value},
                                last_event_id="e2", event_count=2)
    [change] = status_changes({"CA-ON/V2": before}, {"CA-ON/V2": after}, TODAY, T0)
    assert change.view["vehicle"][field] == value
