"""notifications.dispatcher.read_notice: what the dispatcher takes from plates.notices, and
the DLQ reason of everything else (details name fields, never the offending values)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from notifications.dispatcher import MAX_NOTICE_BYTES, read_notice
from schemas.validation import Rejection

NOTICE_ID = str(uuid.uuid4())


def message(**changes: object) -> dict:
    m = {"notice_id": NOTICE_ID, "kind": "renewed", "jurisdiction": "CA-ON", "plate": "ABC123",
         "owner_id": "own-1", "language": "fr", "channels": ["email", "plate_display"],
         "created_at": "2026-01-01T00:00:00Z", "context": {"expires_on": "2027-01-01"}}
    m.update(changes)
    return m


def test_a_contract_notice_is_read() -> None:
    assert read_notice(orjson.dumps(message())) == (uuid.UUID(NOTICE_ID),
                                                    ["email", "plate_display"])


@pytest.mark.parametrize(("value", "reason", "in_detail"), [
    (None, "malformed_json", "no value"),
    (b"", "malformed_json", "JSON"),
    (b'{"kind": "renewed",', "malformed_json", "JSON"),
    (b'{"a": 1, "a": 2}', "malformed_json", ""),
    (b"[1]", "schema_invalid", "notice"),
    (orjson.dumps(message(kind="SECRET-KIND")), "schema_invalid", "kind"),
    (orjson.dumps({k: v for k, v in message().items() if k != "channels"}), "schema_invalid",
     "channels"),
    (orjson.dumps(message(channels=["pigeon"])), "schema_invalid", "channels"),
    (orjson.dumps(message(notice_id="SECRET-ID")), "schema_invalid", "notice_id"),
    (orjson.dumps({**message(), "SECRET-FIELD": 1}), "schema_invalid", "notice"),
    (orjson.dumps(message(context={"pad": "x" * MAX_NOTICE_BYTES})), "too_large", "bytes"),
])
def test_anything_else_is_rejected_with_its_reason(value: bytes | None, reason: str,
                                                   in_detail: str) -> None:
    with pytest.raises(Rejection) as caught:
        read_notice(value)
    assert caught.value.reason == reason
    assert in_detail in caught.value.detail and "SECRET" not in caught.value.detail
