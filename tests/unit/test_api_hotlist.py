"""Hotlist cursors and entries (pure)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.hotlist import (
    ENFORCEMENT_KEYS,
    Cursor,
    InvalidCursor,
    change_entry,
    current_entry,
    decode_cursor,
    delta_cursor,
    full_cursor,
)

VIEW = {"jurisdiction": "CA-ON", "plate": "ABC123", "status": "stolen", "flags": ["stolen"],
        "expires_on": "2027-01-31", "plate_class": "passenger", "suspension_reasons": [],
        "vehicle": None, "smart_plate": False, "as_of": "2026-11-24T15:04:05Z"}


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_delta_cursor_round_trips(seq: int) -> None:
    assert decode_cursor(delta_cursor(seq).encode()) == Cursor(seq=seq)


@given(st.integers(min_value=0, max_value=2**63 - 1),
       st.sampled_from([None, "CA-ON/ABC123", "US-NY/Z9"]))
def test_full_cursor_round_trips(seq: int, key: str | None) -> None:
    assert decode_cursor(full_cursor(seq, key).encode()) == full_cursor(seq, key)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("text", [
    "", "x" * 201, "!!!", "ZDo", _b64("d:"), _b64("d:-1"), _b64("d:01"), _b64("d:1x"),
    _b64("d:99999999999999999999"), _b64(f"d:{2**63}"), _b64("q:1"), _b64("f:1"),
    _b64("f:1:ca-on/abc123"), _b64("f:1:CA-ON/ABC 123"), _b64("f:x:CA-ON/A"),
    "ZDox\u0430", _b64("d:1\n"),
])
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        decode_cursor(text)
    assert "abc" not in str(info.value).lower()


@given(st.text(max_size=80))
def test_decoding_never_raises_anything_else(text: str) -> None:
    try:
        decode_cursor(text)
    except InvalidCursor:
        pass


def test_change_entries_removed_semantics() -> None:
    assert change_entry(VIEW, flagged=False, was_flagged=False) is None
    assert change_entry(VIEW, flagged=True, was_flagged=False)["removed"] is False
    assert change_entry(VIEW, flagged=True, was_flagged=True)["removed"] is False
    assert change_entry({**VIEW, "status": "valid"}, False, True)["removed"] is True


def test_entries_never_carry_owner_data_whatever_the_stored_view_holds() -> None:
    leaky = {**VIEW, "owner": {"name": "Jane"}, "owner_id": "o1", "email": "x@y"}
    for entry in (change_entry(leaky, True, False), current_entry(leaky)):
        assert set(entry) == set(ENFORCEMENT_KEYS) | {"removed"}
