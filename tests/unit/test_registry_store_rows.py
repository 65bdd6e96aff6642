"""platereg.plate_rows: plate states are read by position, so every select must list the state
columns first, in PlateState field order."""

from __future__ import annotations

import datetime as dt

from platereg.plate_rows import STATE_FIELDS, state_columns, state_from_row
from registry.api import lookups
from registry.consumer import store
from schemas.fold import PlateState

VALUES = {
    "jurisdiction": "CA-ON", "plate": "A1", "issued": True, "plate_class": "passenger",
    "expires_on": dt.date(2025, 1, 1), "vehicle": {"make": "Honda"},
    "owner": {"owner_id": "o1"}, "device_id": "dev-1",
    "suspension_reasons": ["court_order", "unpaid_fines"], "stolen": True, "cancelled": False,
    "last_event_time": dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "last_event_id": "e9",
    "event_count": 7,
}


def test_a_row_in_column_order_reads_as_the_state_by_name() -> None:
    assert set(STATE_FIELDS) == set(VALUES)
    row = (*(VALUES[c] for c in STATE_FIELDS), "CA-ON/A1", {"extra": "column"})
    expected = PlateState(**{**VALUES, "suspension_reasons": ("court_order", "unpaid_fines")})
    assert state_from_row(row) == expected
    empty = tuple(None if c == "suspension_reasons" else VALUES[c] for c in STATE_FIELDS)
    assert state_from_row(empty).suspension_reasons == ()


def test_every_plate_query_selects_the_state_columns_first() -> None:
    full, enforcement = state_columns(), state_columns(with_owner=False)
    assert [c.strip() for c in full.split(",")] == list(STATE_FIELDS)
    assert [c.strip() for c in enforcement.split(",")] == [
        "NULL::jsonb AS owner" if c == "owner" else c for c in STATE_FIELDS]
    for sql in (*lookups._PLATE.values(), *lookups._PLATES.values()):
        assert sql.startswith(f"SELECT {full}") or sql.startswith(f"SELECT {enforcement}")
    assert store._STATE == full
