"""Stored rows that cannot be folded fail only their plate; timestamps always read back aware."""

from __future__ import annotations

import datetime as dt

import pytest

from platereg.db import (
    TIME_INFINITY,
    TIME_NEG_INFINITY,
    decode_timestamptz,
    encode_timestamptz,
)
from registry.consumer.batch import Parsed, Unfoldable, fold_history, plan_plates
from schemas.fold import HistoryEvent, PlateState, fold

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
ISSUED = {"plate_class": "passenger", "expires_on": "2026-01-31",
          "vehicle": {"vin": "V1", "make": "Honda", "model": "Civic", "year": 2019,
                      "colour": "blue"},
          "owner": {"owner_id": "o1", "name": "A Person"}}


def parsed(key: str, kind: str, minutes: int, data: dict, id: str) -> Parsed:
    j, _, p = key.partition("/")
    return Parsed(id, kind, "/registry/1", T0 + dt.timedelta(minutes=minutes), key, j, p,
                  data, "fp", 0, minutes)


def state(key: str, last_time: dt.datetime, **kw) -> PlateState:
    j, _, p = key.partition("/")
    return PlateState(j, p, issued=True, last_event_time=last_time, last_event_id="x",
                      event_count=1, **kw)


def test_a_stored_state_with_an_insane_time_breaks_only_its_plate() -> None:
    """The issue: year 1 stored as -infinity came back naive and crashed the comparison."""
    old = {"CA-ON/BAD": state("CA-ON/BAD", dt.datetime.min),             # naive, as before
           "CA-ON/INF": state("CA-ON/INF", TIME_INFINITY),
           "CA-ON/OK": state("CA-ON/OK", T0)}
    new = {key: [parsed(key, "plate.renewed", 5, {"expires_on": "2030-01-01"}, f"n-{key}")]
           for key in (*old, "CA-ON/NEW")}
    broken: dict[str, Unfoldable] = {}
    states, refold = plan_plates(old, new, broken)
    assert set(broken) == {"CA-ON/BAD", "CA-ON/INF"}
    assert all("stored time outside" in exc.reason for exc in broken.values())
    assert broken["CA-ON/BAD"].event_id == "x"
    assert set(states) == {"CA-ON/OK", "CA-ON/NEW"} and refold == []
    assert states["CA-ON/OK"].expires_on == dt.date(2030, 1, 1)
    with pytest.raises(Unfoldable):
        plan_plates(old, new)            # without ``broken`` the error is the caller's


@pytest.mark.parametrize("field, value", [
    ("owner", "not an object"), ("owner", {"owner_id": 5}), ("vehicle", ["x"]),
    ("plate_class", 5), ("device_id", {"a": 1}), ("expires_on", "2026-01-01"),
    ("suspension_reasons", (None,)),
])
def test_a_stored_state_of_the_wrong_shape_breaks_only_its_plate(field: str, value) -> None:
    """A plates row edited by hand (jsonb of another shape...) would crash the write or
    the view; it quarantines its plate instead."""
    old = {"CA-ON/ODD": state("CA-ON/ODD", T0, **{field: value}),
           "CA-ON/OK": state("CA-ON/OK", T0)}
    new = {key: [parsed(key, "plate.owner_updated", 5, {"name": "B"}, f"n-{key}")]
           for key in old}
    broken: dict[str, Unfoldable] = {}
    states, _ = plan_plates(old, new, broken)
    assert set(states) == {"CA-ON/OK"}
    assert broken["CA-ON/ODD"].reason == f"stored {field} has the wrong type"


@pytest.mark.parametrize("data, field", [
    ({**ISSUED, "plate_class": 5}, "plate_class"), ({**ISSUED, "device_id": 7}, "device_id"),
    ({**ISSUED, "owner": {"owner_id": 1, "name": "x"}}, "owner"),
])
def test_stored_rows_that_fold_into_a_wrong_shape_are_unfoldable(data: dict, field: str) -> None:
    with pytest.raises(Unfoldable) as info:
        fold_history("CA-ON", "ABC123", [HistoryEvent("e1", "plate.issued", T0, data)])
    assert info.value.reason == f"stored {field} has the wrong type"


@pytest.mark.parametrize("bad, reason", [
    (HistoryEvent("e2", "plate.issued", dt.datetime.min, ISSUED), "stored time outside"),
    (HistoryEvent("e2", "plate.issued", TIME_NEG_INFINITY, ISSUED), "stored time outside"),
    (HistoryEvent("e2", "plate.issued", dt.datetime(2026, 1, 1), ISSUED), "stored time outside"),
    (HistoryEvent("e2", "plate.renewed", T0, {}), "the fold failed (KeyError)"),
    (HistoryEvent("e2", "plate.renewed", T0, {"expires_on": "soon"}),
     "the fold failed (ValueError)"),
    (HistoryEvent("e2", "plate.painted", T0, {}), "the fold failed (ValueError)"),
])
def test_fold_history_names_the_stored_row_at_fault(bad: HistoryEvent, reason: str) -> None:
    good = HistoryEvent("e1", "plate.issued", T0 - dt.timedelta(days=1), ISSUED)
    with pytest.raises(Unfoldable) as info:
        fold_history("CA-ON", "ABC123", [good, bad])
    assert info.value.reason.startswith(reason)
    assert info.value.event_id == "e2"
    assert "soon" not in str(info.value)          # never the data


def test_fold_history_of_good_rows_is_the_fold() -> None:
    events = [HistoryEvent("e1", "plate.issued", T0, ISSUED),
              HistoryEvent("e0", "plate.renewed", T0 + dt.timedelta(days=1),
                           {"expires_on": "2031-01-01"})]
    assert fold_history("CA-ON", "ABC123", events) == fold("CA-ON", "ABC123", events)


@pytest.mark.parametrize("micros, expected", [
    (-(2**63), TIME_NEG_INFINITY), (2**63 - 1, TIME_INFINITY), (0, dt.datetime(2000, 1, 1,
                                                                              tzinfo=dt.UTC)),
    (-(2**62), TIME_NEG_INFINITY), (2**62, TIME_INFINITY),      # beyond Python's years
])
def test_timestamptz_always_decodes_aware(micros: int, expected: dt.datetime) -> None:
    value = decode_timestamptz((micros,))
    assert value == expected and value.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value", [
    dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC),
    dt.datetime(2026, 11, 24, 15, 4, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
])
def test_timestamptz_round_trips_without_becoming_infinity(value: dt.datetime) -> None:
    micros = encode_timestamptz(value)[0]
    assert abs(micros) < 2**62
    assert decode_timestamptz((micros,)) == value


def test_naive_datetimes_and_dates_encode_like_asyncpg() -> None:
    naive = dt.datetime(2026, 1, 1, 12)
    assert decode_timestamptz(encode_timestamptz(naive)) == naive.astimezone()
    day = dt.date(2026, 1, 1)
    assert decode_timestamptz(encode_timestamptz(day)) == dt.datetime(2026, 1, 1).astimezone()
    with pytest.raises(TypeError):
        encode_timestamptz("2026-01-01")  # type: ignore[arg-type]
