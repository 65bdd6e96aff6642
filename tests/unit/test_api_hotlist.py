"""Hotlist cursors and entries (pure): cursors are sealed (encrypted and authenticated) and
reveal no plate; anything else, altered or sealed under another secret is refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.api.hotlist import (
    ENFORCEMENT_KEYS,
    Cursor,
    InvalidCursor,
    change_entry,
    current_entry,
    decode_cursor,
    delta_cursor,
    full_cursor,
)
from registry.api.sealing import Sealer

SEALER = Sealer(b"k" * 32)
OTHER = Sealer(b"o" * 32)
VIEW = {"jurisdiction": "CA-ON", "plate": "ABC123", "status": "stolen", "flags": ["stolen"],
        "expires_on": "2027-01-31", "plate_class": "passenger", "suspension_reasons": [],
        "vehicle": None, "smart_plate": False, "as_of": "2026-11-24T15:04:05Z",
        "version": 3}


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_delta_cursor_round_trips(seq: int) -> None:
    assert decode_cursor(delta_cursor(seq).encode(SEALER), SEALER) == Cursor(seq=seq)


@given(st.integers(min_value=0, max_value=2**63 - 1),
       st.sampled_from([None, "CA-ON/ABC123", "US-NY/Z9"]))
def test_full_cursor_round_trips(seq: int, key: str | None) -> None:
    assert decode_cursor(full_cursor(seq, key).encode(SEALER), SEALER) == full_cursor(seq, key)


@given(st.integers(min_value=0, max_value=2**40), st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True))
def test_a_cursor_decoded_by_hand_reveals_no_plate(seq: int, plate: str) -> None:
    """base64 of the cursor, by hand: no plate key, plate or jurisdiction in the bytes (the
    payload is encrypted; 4+ character plates are checked so a chance match is negligible),
    and the same position always gives the same cursor (another position another one)."""
    key = f"CA-ON/{plate}"
    text = full_cursor(seq, key).encode(SEALER)
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Not the unsealed form of earlier releases (b"f:<seq>:<key>"); a bare b"f:" anywhere
    # in the ciphertext is a chance match (about one run in ten), not a leak.
    assert b"CA-ON" not in raw and not raw.startswith(b"f:") and f"f:{seq}:".encode() not in raw
    if len(plate) >= 4:
        assert plate.encode() not in raw and plate.encode() not in text.encode()
    assert text == full_cursor(seq, key).encode(SEALER)
    assert text != full_cursor(seq + 1, key).encode(SEALER)
    assert decode_cursor(text, SEALER).after_key == key


def test_altered_or_foreign_cursors_are_refused() -> None:
    text = full_cursor(7, "CA-ON/ABC123").encode(SEALER)
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 1
        with pytest.raises(InvalidCursor):
            decode_cursor(base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("="), SEALER)
    with pytest.raises(InvalidCursor):
        decode_cursor(text, OTHER)
    # The unsealed forms of earlier releases are refused too.
    with pytest.raises(InvalidCursor):
        decode_cursor(_b64("f:7:CA-ON/ABC123"), SEALER)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _sealed(raw: str) -> str:
    return SEALER.seal(raw.encode())


@pytest.mark.parametrize("text", [
    "", "x" * 201, "!!!", "ZDo", _b64("d:1"), _sealed("d:"), _sealed("d:-1"), _sealed("d:01"),
    _sealed("d:1x"),
    _sealed("d:99999999999999999999"), _sealed(f"d:{2**63}"), _sealed("q:1"), _sealed("f:1"),
    _sealed("f:1:ca-on/abc123"), _sealed("f:1:CA-ON/ABC 123"), _sealed("f:x:CA-ON/A"),
    "ZDox\u0430", _sealed("d:1\n"), _sealed("a:1"),
])
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        decode_cursor(text, SEALER)
    assert "abc" not in str(info.value).lower()


@given(st.text(max_size=80))
def test_decoding_never_raises_anything_else(text: str) -> None:
    try:
        decode_cursor(text, SEALER)
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
