"""status_changes (the batch's fast path) equals the plain definition via status_change()."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.consumer.batch import status_change, status_changes, view_of
from schemas.fold import PlateState

AS_OF = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

_states = st.builds(
    PlateState,
    jurisdiction=st.just("CA-ON"),
    plate=st.just("P"),   # replaced by the key below
    issued=st.booleans(),
    plate_class=st.sampled_from([None, "passenger", "commercial"]),
    expires_on=st.sampled_from([None, dt.date(2026, 2, 28), dt.date(2026, 3, 1),
                                dt.date(2026, 3, 2)]),
    vehicle=st.sampled_from([None, {}, {"make": "Honda", "model": "Civic", "year": 2015,
                                        "colour": "blue", "vin": "X"},
                             {"make": "Honda", "model": "Civic", "year": 2016,
                              "colour": "blue", "vin": "X"}]),
    owner=st.sampled_from([None, {"owner_id": "o1", "name": "A"}, {"owner_id": "o2"}]),
    device_id=st.sampled_from([None, "dev-1", "dev-2"]),
    suspension_reasons=st.sampled_from([(), ("court_order",),
                                        ("court_order", "unpaid_fines")]),
    stolen=st.booleans(),
    cancelled=st.booleans(),
    event_count=st.integers(0, 3),
)


def reference(old: dict, new: dict, today: dt.date) -> list:
    out = []
    for key in sorted(new):
        change = status_change(view_of(old.get(key), today, AS_OF),
                               view_of(new[key], today, AS_OF), key)
        if change is not None:
            out.append(change)
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), _states), _states), max_size=8),
       st.sampled_from([dt.date(2026, 2, 28), dt.date(2026, 3, 1), dt.date(2026, 3, 2)]))
def test_fast_status_changes_equal_the_definition(pairs: list, today: dt.date) -> None:
    old: dict = {}
    new: dict = {}
    for i, (before, after) in enumerate(pairs):
        key = f"CA-ON/P{i}"
        if before is not None:
            old[key] = before
        new[key] = after
    assert status_changes(old, new, today, AS_OF) == reference(old, new, today)
