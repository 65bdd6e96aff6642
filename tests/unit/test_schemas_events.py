"""Event envelope and data validation, rejection reasons and fingerprints (contract section 2)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import (
    DATA_TYPES,
    EVENT_TYPES,
    PLATE_EVENT_ADAPTER,
    Event,
    EventType,
    SuspensionReason,
)
from schemas.validation import (
    FUTURE_TOLERANCE,
    MAX_EVENT_BYTES,
    Rejection,
    RejectReason,
    parse_event_bytes,
    parse_event_obj,
)

NOW = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC)

OWNER = {
    "owner_id": "own-42",
    "name": "Jeanne Tremblay",
    "email": "jeanne@example.org",
    "phone": "+15551234567",
    "language": "fr",
}
VEHICLE = {
    "vin": "2HGFC2F59KH500001",
    "make": "Honda",
    "model": "Civic",
    "year": 2019,
    "colour": "blue",
}

DATA: dict[str, Any] = {
    "plate.issued": {
        "plate_class": "passenger",
        "expires_on": "2027-11-30",
        "vehicle": VEHICLE,
        "owner": OWNER,
        "device_id": "dev-1",
    },
    "plate.renewed": {"expires_on": "2027-11-30"},
    "plate.suspended": {"reason": "insurance_lapsed", "detail": "policy 123 lapsed"},
    "plate.reinstated": {"reason": "insurance_lapsed"},
    "plate.stolen_reported": {"agency": "OPP", "report_id": "R-2026-001"},
    "plate.recovered": {"agency": "OPP"},
    "plate.transferred": {"owner": {"owner_id": "own-43", "name": "Sam Lee"}},
    "plate.owner_updated": {"email": "new@example.org"},
    "plate.cancelled": {"reason": "surrendered"},
    "plate.device_paired": {"device_id": "dev-1"},
    "plate.device_unpaired": {},
}


def event(event_type: str = "plate.renewed", **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": "2b7c1d5e-0d1f-4a53-9c55-6f1e0a3b9f10",
        "source": "/serviceontario/office/0042",
        "type": event_type,
        "time": "2026-11-24T15:04:05Z",
        "subject": "CA-ON/ABC123",
        "datacontenttype": "application/json",
        "data": copy.deepcopy(DATA[event_type]),
    }
    for key, value in changes.items():
        if value is _DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


_DROP = object()


def reject(raw: bytes | None) -> Rejection:
    with pytest.raises(Rejection) as info:
        parse_event_bytes(raw, now=NOW)
    return info.value


def reject_obj(obj: Any) -> Rejection:
    """Reject through both entry points and check they agree."""
    with pytest.raises(Rejection) as info:
        parse_event_obj(obj, now=NOW)
    from_bytes = reject(orjson.dumps(obj))
    assert (from_bytes.reason, from_bytes.detail) == (info.value.reason, info.value.detail)
    return info.value


# --------------------------------------------------------------------------- good events


def test_every_type_has_models() -> None:
    assert set(EVENT_TYPES) == set(EventType) == set(DATA_TYPES)
    assert len(EventType) == 11
    assert set(DATA) == {t.value for t in EventType}


@pytest.mark.parametrize("event_type", [t.value for t in EventType])
def test_good_event_of_every_type_parses(event_type: str) -> None:
    parsed = parse_event_bytes(orjson.dumps(event(event_type)), now=NOW)
    assert isinstance(parsed, Event)
    assert isinstance(parsed.data, dict)
    assert parsed.type == event_type
    assert parsed.event_type is EventType(event_type)
    assert parsed.plate_key == parsed.subject == "CA-ON/ABC123"
    assert (parsed.jurisdiction, parsed.plate) == ("CA-ON", "ABC123")
    assert parsed.time == datetime(2026, 11, 24, 15, 4, 5, tzinfo=UTC)
    # round trip through our own serialization
    again = parse_event_bytes(parsed.to_json(), now=NOW)
    assert again == parsed
    assert again.fingerprint() == parsed.fingerprint()


def test_contract_example() -> None:
    raw = b"""{
      "specversion": "1.0",
      "id": "2b7c1d5e-0d1f-4a53-9c55-6f1e0a3b9f10",
      "source": "/serviceontario/office/0042",
      "type": "plate.renewed",
      "time": "2026-11-24T15:04:05Z",
      "subject": "CA-ON/ABC123",
      "datacontenttype": "application/json",
      "data": {"expires_on": "2027-11-30"}
    }"""
    parsed = parse_event_bytes(raw, now=NOW)
    assert parsed.type == "plate.renewed"
    assert date.fromisoformat(parsed.data["expires_on"]) == date(2027, 11, 30)


def test_issued_defaults_and_values() -> None:
    obj = event("plate.issued")
    del obj["data"]["owner"]["language"]
    del obj["data"]["owner"]["email"]
    del obj["data"]["device_id"]
    parsed = parse_event_obj(obj, now=NOW)
    assert parsed.type == "plate.issued"
    assert parsed.data["owner"]["language"] == "en"
    assert "email" not in parsed.data["owner"]
    assert "device_id" not in parsed.data
    assert parsed.data["vehicle"]["year"] == 2019


@pytest.mark.parametrize("data", [_DROP, None, {}])
def test_device_unpaired_data_may_be_missing_null_or_empty(data: Any) -> None:
    parsed = parse_event_obj(event("plate.device_unpaired", data=data), now=NOW)
    assert parsed.type == "plate.device_unpaired"
    assert parsed.data == {}


def test_reinstated_without_reason() -> None:
    parsed = parse_event_obj(event("plate.reinstated", data={}), now=NOW)
    assert parsed.data.get("reason") is None
    parsed = parse_event_obj(event("plate.reinstated", data={"reason": None}), now=NOW)
    assert parsed.data == {}


def test_subject_is_normalized() -> None:
    parsed = parse_event_obj(event(subject="ca-on/abc-123"), now=NOW)
    assert parsed.subject == "CA-ON/ABC123"


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-24T15:04:05Z",
        "2026-11-24T15:04:05z",
        "2026-11-24T10:04:05-05:00",
        "2026-11-24 15:04:05+00:00",
        "2026-11-24T15:04:05.123Z",
        "2026-11-24T15:04:05.123456789Z",
        "2026-11-24T20:34:05+05:30",
    ],
)
def test_rfc3339_times(time: str) -> None:
    parsed = parse_event_obj(event(time=time), now=NOW)
    assert parsed.time.utcoffset() is not None
    assert parsed.time.astimezone(UTC).replace(microsecond=0) == datetime(
        2026, 11, 24, 15, 4, 5, tzinfo=UTC
    )


def test_extension_attributes_are_allowed() -> None:
    parsed = parse_event_obj(
        event(traceparent="00-abc-01", partitionkey="x", seq=5, flag=True, ratio=0.5, gone=None),
        now=NOW,
    )
    assert parsed.extensions == {   # a null attribute is not given (dropped)
        "traceparent": "00-abc-01",
        "partitionkey": "x",
        "seq": 5,
        "flag": True,
        "ratio": 0.5,
    }


def test_datacontenttype_optional_and_may_have_parameters() -> None:
    assert parse_event_obj(event(datacontenttype=_DROP), now=NOW).datacontenttype is None
    with_parameters = parse_event_obj(
        event(datacontenttype="application/json; charset=utf-8"), now=NOW
    )
    assert with_parameters.datacontenttype == "application/json; charset=utf-8"


def test_events_are_immutable() -> None:
    parsed = parse_event_obj(event(), now=NOW)
    with pytest.raises(AttributeError):
        parsed.time = NOW  # type: ignore[misc]
    assert parsed.id == "2b7c1d5e-0d1f-4a53-9c55-6f1e0a3b9f10"


def test_sort_key_compares_instants() -> None:
    a = parse_event_obj(event(id="b", time="2026-11-24T10:00:00-05:00"), now=NOW)
    b = parse_event_obj(event(id="a", time="2026-11-24T15:00:00Z"), now=NOW)
    c = parse_event_obj(event(id="a", time="2026-11-24T14:59:59.999Z"), now=NOW)
    assert sorted([a, b, c], key=lambda e: e.sort_key) == [c, b, a]


def test_adapter_validates_json_directly() -> None:
    parsed = PLATE_EVENT_ADAPTER.validate_json(orjson.dumps(event("plate.cancelled")))
    assert parsed["type"] == "plate.cancelled"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"id": _DROP}, "id: field required"),
        ({"id": ""}, "id: must not be empty"),
        ({"id": "x" * 129}, "id: must be at most 128 characters"),
        ({"id": 42}, "id: must be a string"),
        ({"id": "a\nb"}, "id: must not contain control characters"),
        ({"source": ""}, "source: must not be empty"),
        ({"source": _DROP}, "source: field required"),
        ({"time": _DROP}, "time: field required"),
        ({"time": "2026-11-24T15:04:05"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "yesterday"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "2026-11-24"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "2026-13-24T15:04:05Z"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": 1764000000}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "2026-11-24T24:00:00Z"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "2026-11-24T15:04:05+24:00"}, "time: must be RFC 3339 with a UTC offset"),
        ({"time": "0001-01-01T00:00:00+01:00"}, "time: must be from 1900-01-01T00:00:00Z"),
        ({"time": "9999-12-31T23:59:59-01:00"}, "time: must be from 1900-01-01T00:00:00Z"),
        ({"time": "２０２６-11-24T15:04:05Z"}, "time: must be RFC 3339 with a UTC offset"),
        ({"specversion": "0.3"}, "specversion: must be '1.0'"),
        ({"specversion": 1.0}, "specversion: must be '1.0'"),
        ({"specversion": _DROP}, "specversion: field required"),
        ({"subject": _DROP}, "subject: field required"),
        ({"subject": 7}, "subject: must be a string"),
        ({"datacontenttype": "text/xml"}, "datacontenttype: must be application/json"),
        ({"data": _DROP}, "data: field required"),
        ({"data": None}, "data: must be an object"),
        ({"data": {}}, "data.expires_on: field required"),
        ({"data": {"expires_on": "2027-02-30"}}, "data.expires_on: invalid date"),
        ({"data": {"expires_on": "30/11/2027"}}, "data.expires_on: invalid date"),
        ({"data": {"expires_on": 20271130}}, "data.expires_on: invalid date"),
        # Unknown keys are the client's text: never echoed (their object or position is).
        ({"data": {"expires_on": "2027-11-30", "JaneDoe": 1}}, "data: unknown field"),
        ({"Jane_Doe": "x"}, ": unknown attribute"),
        ({"averyveryverylongextensionname": "x"}, "unknown attribute"),
        ({"ext": {"a": 1}}, "ext: extension attribute must be a string, number or boolean"),
        ({"ext": [1]}, "ext: extension attribute must be a string, number or boolean"),
    ],
)
def test_schema_invalid_has_one_precise_message(changes: dict[str, Any], detail: str) -> None:
    rejection = reject_obj(event(**changes))
    assert rejection.reason is RejectReason.SCHEMA_INVALID
    assert detail in rejection.detail
    assert ";" not in rejection.detail, "exactly one problem expected"


@pytest.mark.parametrize(
    ("event_type", "data", "detail"),
    [
        ("plate.renewed", {}, "data.expires_on: field required"),
        ("plate.suspended", {"reason": "speeding"}, "data.reason: must be one of"),
        (
            "plate.suspended",
            {"reason": "court_order", "detail": "x" * 501},
            "data.detail: must be at most 500",
        ),
        ("plate.cancelled", {"reason": "lost"}, "data.reason: must be one of"),
        ("plate.stolen_reported", {"agency": "OPP"}, "data.report_id: field required"),
        ("plate.device_paired", {}, "data.device_id: field required"),
        ("plate.device_paired", {"device_id": "dev 1"}, "data.device_id: must start with"),
        ("plate.device_unpaired", {"device_id": "dev-1"}, "data.device_id: unknown field"),
        ("plate.transferred", {}, "data.owner: field required"),
        ("plate.transferred", {"owner": {"owner_id": "o1"}}, "data.owner.name: field required"),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": ""}},
            "data.owner.name: must not be empty",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o/1", "name": "N"}},
            "data.owner.owner_id: must start with",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": "N", "email": "nope"}},
            "data.owner.email: value is not a valid email address",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": "N", "phone": "call me"}},
            "data.owner.phone: value is not a valid phone number",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": "N", "phone": "+1234567890123456"}},
            "data.owner.phone: phone number must have 4 to 15 digits",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": "N", "language": "de"}},
            "data.owner.language: must be one of",
        ),
        (
            "plate.transferred",
            {"owner": {"owner_id": "o1", "name": "A\r\nBcc: x"}},
            "data.owner.name: must not contain control characters",
        ),
        (
            "plate.owner_updated",
            {},
            "data: at least one of name, email, phone, language, address is required",
        ),
        ("plate.owner_updated", {"name": None}, "data: at least one of"),
        ("plate.owner_updated", {"owner_id": "x"}, "data.owner_id: unknown field"),
    ],
)
def test_wrong_data_for_type(event_type: str, data: Any, detail: str) -> None:
    rejection = reject_obj(event(event_type, data=data))
    assert rejection.reason is RejectReason.SCHEMA_INVALID
    assert detail in rejection.detail
    assert ";" not in rejection.detail


def _issued_with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = event("plate.issued")
    target = obj["data"]
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "detail"),
    [
        (("owner",), _DROP, "data.owner: field required"),
        (("vehicle",), _DROP, "data.vehicle: field required"),
        (("plate_class",), "car", "data.plate_class: must be one of"),
        (("expires_on",), _DROP, "data.expires_on: field required"),
        (("vehicle", "vin"), "", "data.vehicle.vin: must be 1 to 32 ASCII letters or digits"),
        (("vehicle", "vin"), "VIN-123", "data.vehicle.vin: must be 1 to 32"),
        (("vehicle", "year"), 1885, "data.vehicle.year: must be >= 1886"),
        (("vehicle", "year"), 2101, "data.vehicle.year: must be <= 2100"),
        (("vehicle", "year"), "2019", "data.vehicle.year: must be an integer"),
        (("vehicle", "year"), True, "data.vehicle.year: must be an integer"),
        (("vehicle", "year"), 2019.5, "data.vehicle.year: must be an integer"),
        (("vehicle", "year"), 10**18, "data.vehicle.year: must be <= 2100"),
        (("vehicle", "make"), "x" * 101, "data.vehicle.make: must be at most 100 characters"),
        (("vehicle", "colour"), _DROP, "data.vehicle.colour: field required"),
        (("owner", "email"), "a@b", "data.owner.email: value is not a valid email address"),
        (("owner", "email"), "a" * 250 + "@example.org", "data.owner.email: must be at most 254"),
        (("device_id",), "", "data.device_id: must not be empty"),
    ],
)
def test_issued_data_problems(path: tuple[str, ...], value: Any, detail: str) -> None:
    rejection = reject_obj(_issued_with(path, value))
    assert rejection.reason is RejectReason.SCHEMA_INVALID
    assert detail in rejection.detail
    assert ";" not in rejection.detail


def test_several_problems_are_all_listed() -> None:
    rejection = reject_obj(event(id="", specversion="0.3", time="noon", data={"expires_on": "x"}))
    assert rejection.reason is RejectReason.SCHEMA_INVALID
    assert rejection.detail.split("; ") == [
        "specversion: must be '1.0'",
        "id: must not be empty",
        "time: must be RFC 3339 with a UTC offset, e.g. 2026-11-24T15:04:05Z",
        "data.expires_on: invalid date, expected YYYY-MM-DD with a year from 1900 to 2200",
    ]


@pytest.mark.parametrize(
    "event_type", ["plate.exploded", "Plate.Issued", "plate.issued ", "", "x" * 500]
)
def test_unknown_type(event_type: str) -> None:
    rejection = reject_obj(event("plate.renewed", type=event_type, id=""))
    assert rejection.reason is RejectReason.UNKNOWN_TYPE
    assert rejection.detail.startswith("type: unknown event type")
    assert len(rejection.detail) < 100


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (_DROP, "type: field required"),
        (None, "type: must be a string"),
        (3, "type: must be a string"),
    ],
)
def test_missing_or_non_string_type_is_schema_invalid(value: Any, detail: str) -> None:
    rejection = reject_obj(event(type=value))
    assert (rejection.reason, rejection.detail) == (RejectReason.SCHEMA_INVALID, detail)


@pytest.mark.parametrize(
    "subject",
    [
        "ABC123",
        "CA-ON/",
        "ONT/ABC123",
        "CA-ON/ABCDEFGHIJK",
        "CA-ON/ABC/1",
        "CA-ON/\u0410BC123",
        "",
        "CA-ON/SECRET'--",
    ],
)
def test_invalid_subject(subject: str) -> None:
    rejection = reject_obj(event(subject=subject, id=""))  # plate problems win over schema ones
    assert rejection.reason is RejectReason.INVALID_PLATE
    assert rejection.detail.startswith("subject: ")
    assert "SECRET" not in rejection.detail and "ABC" not in rejection.detail


def test_future_time() -> None:
    just_ok = (NOW + FUTURE_TOLERANCE).isoformat()
    assert parse_event_obj(event(time=just_ok), now=NOW).time == NOW + FUTURE_TOLERANCE
    too_late = (NOW + FUTURE_TOLERANCE + timedelta(seconds=1)).isoformat()
    rejection = reject_obj(event(time=too_late))
    assert rejection.reason is RejectReason.FUTURE_TIME
    # the same instant written with another offset
    other_offset = (
        (NOW + timedelta(minutes=6)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    )
    assert reject_obj(event(time=other_offset)).reason is RejectReason.FUTURE_TIME


def test_schema_problems_win_over_future_time() -> None:
    rejection = reject_obj(event(time="2030-01-01T00:00:00Z", id=""))
    assert rejection.reason is RejectReason.SCHEMA_INVALID


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="^now must be a timezone-aware datetime$") as info:
        parse_event_obj(event(), now=datetime(2026, 11, 24, 16, 0))  # noqa: DTZ001
    assert not isinstance(info.value, Rejection)  # a caller's bug, not a dead-letter reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, RejectReason.MALFORMED_JSON),
        (b"", RejectReason.MALFORMED_JSON),
        (b"{", RejectReason.MALFORMED_JSON),
        (b"not json", RejectReason.MALFORMED_JSON),
        (b"{'a': 1}", RejectReason.MALFORMED_JSON),
        (b'{"a": NaN}', RejectReason.MALFORMED_JSON),
        (b"\xff\xfe{}", RejectReason.MALFORMED_JSON),
        (b"[]", RejectReason.MALFORMED_JSON),
        (b"[{}]", RejectReason.MALFORMED_JSON),
        (b'"plate.issued"', RejectReason.MALFORMED_JSON),
        (b"42", RejectReason.MALFORMED_JSON),
        (b"null", RejectReason.MALFORMED_JSON),
        (b"true", RejectReason.MALFORMED_JSON),
        (b'{"a": 1, "a": 2}', RejectReason.MALFORMED_JSON),
        (b"[" * 100_000, RejectReason.TOO_LARGE),
        (b"[" * 5000 + b"]" * 5000, RejectReason.MALFORMED_JSON),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, RejectReason.MALFORMED_JSON),
        (b'{"a":' * 100 + b"1" + b"}" * 100, RejectReason.MALFORMED_JSON),
        (b"[" + b"9" * 5000 + b"]", RejectReason.MALFORMED_JSON),
        (b"{}", RejectReason.SCHEMA_INVALID),
    ],
)
def test_raw_value_rejections(raw: bytes | None, reason: RejectReason) -> None:
    assert reject(raw).reason is reason


def test_duplicate_keys_anywhere_are_rejected() -> None:
    raw = orjson.dumps(event()).replace(b'"expires_on"', b'"expires_on":"2020-01-01","expires_on"')
    rejection = reject(raw)
    assert (rejection.reason, rejection.detail) == (
        RejectReason.MALFORMED_JSON,
        "duplicate object key",
    )


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (b"9" * 30, RejectReason.SCHEMA_INVALID),  # decoded as a float: not an integer
        (b"1e30", RejectReason.SCHEMA_INVALID),
        (b"9" * 400, RejectReason.MALFORMED_JSON),  # beyond double range: refused by the decoder
        (b"1e400", RejectReason.MALFORMED_JSON),
    ],
)
def test_huge_numbers_do_not_crash(number: bytes, reason: RejectReason) -> None:
    raw = orjson.dumps(event("plate.issued")).replace(b'"year":2019', b'"year":' + number)
    assert reject(raw).reason is reason


def test_big_integer_object_is_schema_invalid() -> None:
    obj = _issued_with(("vehicle", "year"), 10**30)
    with pytest.raises(Rejection) as info:
        parse_event_obj(obj, now=NOW)
    assert info.value.reason is RejectReason.SCHEMA_INVALID


def test_non_json_object_is_malformed() -> None:
    with pytest.raises(Rejection) as info:
        parse_event_obj(event(extra=object()), now=NOW)
    assert info.value.reason is RejectReason.MALFORMED_JSON


def test_too_large() -> None:
    obj = event(padding="x" * MAX_EVENT_BYTES)
    rejection = reject(orjson.dumps(obj))
    assert rejection.reason is RejectReason.TOO_LARGE
    with pytest.raises(Rejection) as info:
        parse_event_obj(obj, now=NOW)
    assert info.value.reason is RejectReason.TOO_LARGE


def test_exactly_the_limit_is_not_too_large() -> None:
    base = orjson.dumps(event(padding=""))
    raw = orjson.dumps(event(padding="x" * (MAX_EVENT_BYTES - len(base))))
    assert len(raw) == MAX_EVENT_BYTES
    assert parse_event_bytes(raw, now=NOW).extensions == {"padding": "x" * (len(raw) - len(base))}
    assert reject(raw + b" ").reason is RejectReason.TOO_LARGE


def test_too_large_wins_over_malformed() -> None:
    assert reject(b"\x00" * (MAX_EVENT_BYTES + 1)).reason is RejectReason.TOO_LARGE


def test_accepts_bytearray_and_memoryview() -> None:
    raw = orjson.dumps(event())
    assert (
        parse_event_bytes(bytearray(raw), now=NOW).id
        == parse_event_bytes(memoryview(raw), now=NOW).id
    )


def test_details_never_contain_personal_data() -> None:
    obj = event("plate.issued", subject="CA-ON/ZZZ999")
    obj["data"]["owner"]["name"] = "Jeanne\x00Tremblay"
    obj["data"]["owner"]["email"] = "Jeanne Tremblay <jeanne>"
    obj["data"]["vehicle"]["vin"] = "ZZZ999-VIN"
    rejection = reject_obj(obj)
    assert rejection.reason is RejectReason.SCHEMA_INVALID
    for secret in ("Jeanne", "Tremblay", "ZZZ999"):
        assert secret not in rejection.detail
        assert secret not in str(rejection)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_reject(raw: bytes) -> None:
    with pytest.raises(Rejection) as info:
        parse_event_bytes(raw, now=NOW)
    assert info.value.reason in set(RejectReason) and info.value.detail


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(event("plate.issued")) + ["x"]), _json, max_size=9))
def test_random_objects_only_ever_reject(obj: dict[str, Any]) -> None:
    with pytest.raises(Rejection) as info:
        parse_event_obj(obj, now=NOW)
    assert info.value.reason in set(RejectReason) and info.value.detail


# --------------------------------------------------------------------------- fingerprints


def fp(obj: dict[str, Any]) -> str:
    return parse_event_obj(obj, now=NOW).fingerprint()


def test_fingerprint_is_sha256_hex() -> None:
    value = fp(event())
    assert len(value) == 64 and int(value, 16) >= 0


def test_fingerprint_ignores_representation() -> None:
    original = event("plate.issued")
    reordered = dict(reversed(list(original.items())))
    reordered["data"] = dict(reversed(list(original["data"].items())))
    assert orjson.dumps(reordered) != orjson.dumps(original)
    assert fp(reordered) == fp(original)
    assert fp(event("plate.issued", time="2026-11-24T10:04:05-05:00")) == fp(original)
    assert fp(event("plate.issued", time="2026-11-24T15:04:05.000Z")) == fp(original)
    assert fp(event("plate.issued", subject="ca-on/abc-123")) == fp(original)
    assert fp(event("plate.issued", subject="CA-ON/ABC 123")) == fp(original)


def test_fingerprint_ignores_id_extensions_and_envelope_metadata() -> None:
    original = fp(event())
    assert fp(event(id="another-id")) == original
    assert fp(event(traceparent="abc")) == original
    assert fp(event(datacontenttype=_DROP)) == original


def test_fingerprint_fills_defaults_and_drops_nulls() -> None:
    with_default = event("plate.transferred", data={"owner": {"owner_id": "o1", "name": "N"}})
    explicit = event(
        "plate.transferred",
        data={"owner": {"owner_id": "o1", "name": "N", "language": "en", "email": None}},
    )
    assert fp(with_default) == fp(explicit)
    assert fp(event("plate.reinstated", data={})) == fp(
        event("plate.reinstated", data={"reason": None})
    )
    assert fp(event("plate.device_unpaired", data=_DROP)) == fp(
        event("plate.device_unpaired", data=None)
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"data": {"expires_on": "2027-12-01"}},
        {"time": "2026-11-24T15:04:06Z"},
        {"time": "2026-11-24T15:04:05.000001Z"},
        {"source": "/serviceontario/office/0043"},
        {"subject": "CA-ON/ABC124"},
        {"subject": "CA-QC/ABC123"},
    ],
)
def test_fingerprint_changes_with_content(changes: dict[str, Any]) -> None:
    assert fp(event(**changes)) != fp(event())


def test_fingerprint_differs_by_type_with_same_data() -> None:
    a = fp(event("plate.suspended", data={"reason": "court_order"}))
    b = fp(event("plate.reinstated", data={"reason": "court_order"}))
    assert a != b


def test_fingerprint_changes_with_nested_data() -> None:
    base = event("plate.issued")
    changed = copy.deepcopy(base)
    changed["data"]["owner"]["language"] = "en"
    assert fp(changed) != fp(base)


def test_enums_are_strings() -> None:
    assert SuspensionReason.COURT_ORDER == "court_order"
    assert EventType.PLATE_ISSUED == "plate.issued"


# --------------------------------------------------------------------------- size bound

#: Longest input text of the attributes whose JSON Schema has no maxLength (their
#: validators or patterns bound them).
_TEXT_BOUNDS = {"subject": 2 * 64 + 1, "time": 40, "expires_on": 10, "datacontenttype": 200,
                "vin": 32}


def _bound(node: dict[str, Any], defs: dict[str, Any], name: str = "") -> int:
    """Most bytes of the compact JSON of any value ``node`` (a JSON Schema) accepts, at
    4 bytes per character (orjson writes no escapes for the characters the patterns allow
    but a quote or a backslash, 2 bytes)."""
    if "$ref" in node:
        return _bound(defs[node["$ref"].rsplit("/", 1)[1]], defs, name)
    if "anyOf" in node:
        return max(_bound(option, defs, name) for option in node["anyOf"])
    if "const" in node:
        return len(orjson.dumps(node["const"]))
    if "enum" in node:
        return max(len(orjson.dumps(v)) for v in node["enum"])
    kind = node.get("type")
    if kind == "null" or kind == "boolean":
        return 5
    if kind == "integer":
        return 20
    if kind == "string":
        return 4 * (node.get("maxLength") or _TEXT_BOUNDS[name]) + 2
    if kind == "array":
        return node["maxItems"] * (_bound(node["items"], defs, name) + 1) + 2
    assert kind == "object" and node.get("additionalProperties") is not True or name == "", node
    return 2 + sum(len(key) + 4 + _bound(value, defs, key)
                   for key, value in node["properties"].items())


def test_no_valid_event_without_extension_attributes_can_be_too_large() -> None:
    """What lets ``parse_event_objs`` skip the size check of schema-valid events without
    extension attributes."""
    schema = PLATE_EVENT_ADAPTER.json_schema()
    defs = schema["$defs"]
    largest = max(_bound({"type": "object", "properties": defs[name]["properties"]}, defs)
                  for name in (t.__name__ for t in EVENT_TYPES.values()))
    assert 5_000 < largest < MAX_EVENT_BYTES


def test_an_event_with_extension_attributes_is_still_measured() -> None:
    with pytest.raises(Rejection) as info:
        parse_event_obj(event(padding="x" * MAX_EVENT_BYTES), now=NOW)
    assert info.value.reason is RejectReason.TOO_LARGE
