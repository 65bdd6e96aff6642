"""registry.store reads plate rows by position: the positions must follow _PLATE_SELECT."""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry.domain import state_from_row
from registry.store import _PLATE_SELECT, _state_from_select

COLUMNS = [c.strip() for c in
           _PLATE_SELECT.removeprefix("SELECT ").removesuffix(" FROM plates").split(",")]


class Row(tuple):
    """Like an asyncpg Record: indexable by position and by column name."""

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return tuple.__getitem__(self, COLUMNS.index(key) if isinstance(key, str) else key)


def test_positional_read_equals_read_by_name() -> None:
    values = {
        "plate_key": "CA-ON/A1", "jurisdiction": "CA-ON", "plate": "A1", "issued": True,
        "plate_class": "passenger", "expires_on": dt.date(2025, 1, 1),
        "vehicle": {"make": "Honda"}, "owner_id": "o1", "owner": {"owner_id": "o1"},
        "device_id": "dev-1", "suspension_reasons": ["court_order", "unpaid_fines"],
        "stolen": True, "cancelled": False,
        "last_event_time": dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "last_event_id": "e9",
        "event_count": 7,
    }
    assert sorted(COLUMNS) == sorted(values)
    row = Row(values[c] for c in COLUMNS)
    assert _state_from_select(row) == state_from_row(row)
    empty = Row(None if c == "suspension_reasons" else values[c] for c in COLUMNS)
    assert _state_from_select(empty) == state_from_row(empty)
