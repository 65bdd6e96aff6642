"""Hostile values are rejected with the right reason and a clear detail (issue 16).

The catalogue is ``tests.hostile``; the same values go through the real consumer
in ``tests/integration/test_consumer_poison.py``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas._types import IsoDate, Rfc3339Datetime, has_forbidden_chars
from schemas.validation import Rejection, parse_event_bytes, parse_event_obj
from tests.hostile import BAD_TEXT, base, cases

NOW = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC)
CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_value_is_rejected_with_its_reason(case) -> None:
    with pytest.raises(Rejection) as info:
        parse_event_bytes(case.value, now=NOW)
    assert info.value.reason == case.reason
    assert case.detail in info.value.detail
    assert len(info.value.detail) <= 1000


@pytest.mark.parametrize("case", [c for c in CASES if c.reason == "schema_invalid"],
                         ids=lambda c: c.name)
def test_hostile_object_is_rejected_the_same_way_from_an_http_body(case) -> None:
    obj = orjson.loads(case.value)
    with pytest.raises(Rejection) as info:
        parse_event_obj(obj, now=NOW)
    assert (info.value.reason, info.value.detail) == (
        case.reason, _detail_of(case.value))


def _detail_of(value: bytes) -> str:
    with pytest.raises(Rejection) as info:
        parse_event_bytes(value, now=NOW)
    return info.value.detail


def test_a_hostile_detail_never_repeats_the_hostile_text() -> None:
    for case in CASES:
        with pytest.raises(Rejection) as info:
            parse_event_bytes(case.value, now=NOW)
        assert not has_forbidden_chars(info.value.detail), case.name
        assert "Jeanne" not in info.value.detail, case.name


# --------------------------------------------------------------------------- times


TIMES = TypeAdapter(Rfc3339Datetime)


@pytest.mark.parametrize("text", [
    "1900-01-01T00:00:00Z", "2200-12-31T23:59:59.999999Z", "1900-01-01T00:00:00-05:00",
    "2026-11-24T15:04:05+14:00", "2026-11-24T15:04:05-12:00", "2026-11-24T15:04:05+05:45",
    "2026-11-24T15:04:05.123456789Z",
])
def test_instants_at_the_edges_of_the_range_are_accepted(text: str) -> None:
    value = TIMES.validate_python(text)
    assert value.utcoffset() is not None


@pytest.mark.parametrize("value", [
    datetime(1, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    datetime(2026, 1, 1),  # naive
])
def test_out_of_range_datetimes_are_rejected_from_python_too(value: datetime) -> None:
    with pytest.raises(ValidationError):
        TIMES.validate_python(value)


def test_year_1_is_rejected_before_the_future_check() -> None:
    """The issue's event: accepted before, then stored as -infinity."""
    ev = base(time="0001-01-01T00:00:00Z")
    with pytest.raises(Rejection) as info:
        parse_event_obj(ev, now=NOW)
    assert info.value.reason == "schema_invalid"
    assert info.value.detail == (
        "time: must be from 1900-01-01T00:00:00Z to before 2201-01-01T00:00:00Z")


def test_time_far_ahead_but_in_range_is_still_future_time() -> None:
    with pytest.raises(Rejection) as info:
        parse_event_obj(base(time="2200-01-01T00:00:00Z"), now=NOW)
    assert info.value.reason == "future_time"


# --------------------------------------------------------------------------- dates


DATES = TypeAdapter(IsoDate)


@pytest.mark.parametrize("text", ["1900-01-01", "2200-12-31", "2028-02-29"])
def test_dates_in_range_are_accepted(text: str) -> None:
    assert DATES.validate_python(text) == date.fromisoformat(text)


@pytest.mark.parametrize("value", [date.min, date.max, date(1899, 12, 31), date(2201, 1, 1)])
def test_dates_out_of_range_are_rejected_from_python_too(value: date) -> None:
    with pytest.raises(ValidationError) as info:
        DATES.validate_python(value)
    assert "year from 1900 to 2200" in str(info.value)


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("name", ["Zoë Ørsted-Ñúñez", "李小龙", "محمد عبد الله", "Ἀθηνᾶ",
                                  "O'Brien & Søn", "👩‍👩‍👧 family"])
def test_names_in_any_script_are_accepted(name: str) -> None:
    ev = base()
    ev["data"]["owner"]["name"] = name
    assert parse_event_obj(ev, now=NOW).data["owner"]["name"] == name


@pytest.mark.parametrize("kind", sorted(BAD_TEXT))
def test_owner_update_rejects_the_same_characters(kind: str) -> None:
    ev = {**base(), "type": "plate.owner_updated", "data": {"name": BAD_TEXT[kind]}}
    with pytest.raises(Rejection) as info:
        parse_event_obj(ev, now=NOW)
    assert info.value.reason == "schema_invalid"
    assert info.value.detail.startswith("data.name: must not contain control characters")


@pytest.mark.parametrize("char", [chr(c) for c in range(0x80, 0xA0)])
def test_every_c1_control_is_rejected(char: str) -> None:
    assert has_forbidden_chars(f"a{char}b")


# --------------------------------------------------------------------------- envelope


@pytest.mark.parametrize("value", [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON;charset=UTF-8",
    "application/json;" + "x" * (200 - 17),
])
def test_datacontenttype_accepted(value: str) -> None:
    assert parse_event_obj({**base(), "datacontenttype": value}, now=NOW)


@pytest.mark.parametrize("value", [
    "application/json;" + "x" * (201 - 17),       # one character over the limit
    "application/json" + " " * 200,               # the unchecked tail before the fix
    "application/json\u2028", "application/json; a=\u00e9", "application/json\n",
])
def test_datacontenttype_is_checked_in_full(value: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_event_obj({**base(), "datacontenttype": value}, now=NOW)
    assert info.value.detail.startswith("datacontenttype: must be application/json")


@pytest.mark.parametrize("value, problem", [
    (math.nan, "must be a finite number"), (math.inf, "must be a finite number"),
    (-math.inf, "must be a finite number"), (2**64, "must be an integer within 64 bits"),
    ("a\u202eb", "must not contain control characters"), ({"a": 1}, "must be a string"),
])
def test_extension_values_from_a_python_json_parser(value: Any, problem: str) -> None:
    """An HTTP body parsed with the stdlib (which reads NaN and big integers) cannot
    carry values the Kafka side could not serialize."""
    with pytest.raises(Rejection) as info:
        parse_event_obj({**base(), "trace": value}, now=NOW)
    assert info.value.reason == "schema_invalid"
    assert info.value.detail.startswith(f"trace: extension attribute {problem}")


def test_nan_from_the_stdlib_parser_in_data_is_schema_invalid() -> None:
    body = json.dumps(base()).replace('"year": 2019', '"year": NaN')
    with pytest.raises(Rejection) as info:
        parse_event_obj(json.loads(body), now=NOW)
    assert info.value.reason == "schema_invalid"
    assert "data.vehicle.year: must be an integer" in info.value.detail


# --------------------------------------------------------------------------- property

HOSTILE_SCALARS = [
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-11-24T15:04:05+23:59",
    "2016-12-31T23:59:60Z", "0001-01-01", "9999-12-31", "-0001-01-01", "+10000-01-01",
    "a\u0085b", "a\u2028b", "a\u202eb", "\x00", "\ud800", "", " ", "application/json\n",
    math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, 10**30, 1e308, -0.0, True, None,
]
_leaf = (st.sampled_from(HOSTILE_SCALARS) | st.text(max_size=12) | st.integers()
         | st.floats() | st.none() | st.booleans())
_value = st.recursive(_leaf, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    return out


PATHS = [*_paths(base()), ("trace",), ("data", "owner", "phone")]


def _mutated(path: tuple, value: Any) -> dict[str, Any]:
    ev = base(subject="CA-ON/PROP1", id="prop-1")
    target = ev
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return ev


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(PATHS), st.sampled_from(HOSTILE_SCALARS) | _value)
def test_one_hostile_part_never_gets_past_validation_into_the_fold(path: tuple, value: Any
                                                                   ) -> None:
    """Any single hostile part of an event: the event is rejected with a reason, or what is
    accepted is sane (time in range and aware, clean text, JSON-serializable data) and
    folds, views and turns into ``plates`` column values without raising."""
    from registry.consumer.batch import Parsed, Rejected, parse_value, plan_plates, view_of
    from schemas._types import date_in_range, time_in_range

    ev = _mutated(path, value)
    try:
        raw = orjson.dumps(ev)
    except (TypeError, orjson.JSONEncodeError):
        with pytest.raises(Rejection):
            parse_event_obj(ev, now=NOW)          # the HTTP path of the same object
        return
    result = parse_value(raw, 0, 0, NOW)
    if isinstance(result, Rejected):
        assert result.reason and result.detail
        return
    assert isinstance(result, Parsed) and time_in_range(result.time)

    def clean(node: Any) -> None:
        if isinstance(node, str):
            assert not has_forbidden_chars(node)
        elif isinstance(node, dict):
            if "expires_on" in node:
                assert date_in_range(date.fromisoformat(node["expires_on"]))
            for k, v in node.items():
                clean(k)
                clean(v)
        elif isinstance(node, list):
            for v in node:
                clean(v)
        elif isinstance(node, float):
            assert math.isfinite(node)

    clean(result.data)
    orjson.dumps(result.data)
    states, _ = plan_plates({}, {result.plate_key: [result]})
    state = states[result.plate_key]
    view_of(state, NOW.date(), NOW)
    # what registry.consumer.store.upsert_plates sends for the row's jsonb and text[] columns
    orjson.dumps(state.vehicle), orjson.dumps(state.owner), ",".join(state.suspension_reasons)
