"""The canonical fast path (schemas.canonical) against the full validation it shortcuts.

Whatever the fast path accepts, the full path accepts with the same published
object (compared as bytes: same keys, same order, same values); whatever it is
not sure of, it leaves to the full path (None).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import simulate as sim
from ingest.api import _validate_each, normalized, validate_batch
from schemas.canonical import CANONICAL_EVENT_ADAPTER, HANDLED_VALIDATORS, canonical_event
from schemas.events import DATA_MODELS, EVENT_MODELS, Address, Owner, Vehicle
from schemas.plates import MAX_RAW_LENGTH
from schemas.policy import DEFAULT_POLICY, compile_policy
from schemas.validation import MAX_EVENT_BYTES, Rejection, parse_event_obj

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
#: A clock no event time is ahead of.
LATER = datetime(2300, 1, 1, tzinfo=UTC)


def simulated() -> list[dict[str, Any]]:
    items = sim.generate(sim.SimConfig(plates=1500, seed=5, start=NOW - timedelta(days=400),
                                       duration=timedelta(days=365), invalid_share=0.1))
    out = []
    for item in items:
        try:
            out.append(orjson.loads(item.value))
        except (TypeError, orjson.JSONDecodeError):  # the simulator's broken JSON
            continue
    return out


SIMULATED = simulated()


def full_path(obj: object, now: datetime = NOW) -> bytes | None:
    """The published JSON of the full validation, or None when it rejects."""
    try:
        event = parse_event_obj(obj, now=now)
    except Rejection:
        return None
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def check_agrees(obj: object) -> dict[str, Any] | None:
    fast = canonical_event(copy.deepcopy(obj))
    if fast is not None:
        expected = full_path(obj, LATER)  # future_time is the caller's check
        assert expected is not None, "the fast path accepted what the models reject"
        assert orjson.dumps(fast) == expected
    return fast


def test_simulated_traffic_takes_the_fast_path_with_the_same_output() -> None:
    valid = [e for e in SIMULATED if full_path(e) is not None]
    fast = [e for e in valid if check_agrees(e) is not None]
    assert len(valid) > 1000
    assert len(fast) >= 0.95 * len(valid)     # the fast path is the common one
    kinds = {e["type"] for e in fast}
    assert len(kinds) >= 9, kinds
    for event in SIMULATED:                   # invalid simulated events included
        check_agrees(event)


def base(**changes: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "e-1", "source": "/registry/x", "type": "plate.issued",
             "time": "2026-01-05T15:04:05Z", "subject": "CA-ON/ABC123",
             "datacontenttype": "application/json",
             "data": {"plate_class": "passenger", "expires_on": "2027-01-31",
                      "vehicle": {"vin": "VIN1", "make": "Honda", "model": "Civic",
                                  "year": 2019, "colour": "blue"},
                      "owner": {"owner_id": "own-1", "name": "Ann Lee", "language": "fr",
                                "phone": "+1 (416) 555-0100"}}}
    event.update(changes)
    return event


def with_data(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(event)
    node = event["data"]
    for part in path[:-1]:
        node = node[part]
    if value is _DROP:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return event


_DROP = object()


@pytest.mark.parametrize("event", [
    base(time="2026-01-05T15:04:05+00:00"),      # offsets: printed as Z by the models
    base(time="2026-01-05T10:04:05-05:00"),
    base(time="2026-01-05T15:04:05.5Z"),
    base(time="2026-01-05t15:04:05z"),
    base(time="2024-02-29T15:04:05Z"),           # leap day: left to the models
    base(datacontenttype="application/json; charset=utf-8"),
    base(datacontenttype=None),
    base(trace="abc"),                           # an extension attribute
    with_data(base(), ("owner", "language"), _DROP),   # the default is printed
    with_data(base(), ("owner", "email"), None),
    with_data(base(), ("expires_on",), "2028-02-29"),
    base(type="plate.device_unpaired", data=None),
])
def test_valid_but_not_canonical_goes_to_the_full_path(event: dict[str, Any]) -> None:
    assert canonical_event(event) is None
    assert full_path(event) is not None


def test_subject_and_phone_are_normalized_like_the_models() -> None:
    messy = base(subject=" ca-on/abc-123")
    assert check_agrees(messy)["subject"] == "CA-ON/ABC123"
    odd_phone = with_data(base(), ("owner", "phone"), "+1-416-555-0100-1234567")  # 18 digits
    assert canonical_event(odd_phone) is None and full_path(odd_phone) is None
    long_phone = with_data(base(), ("owner", "phone"), "+1" + " " * 26 + "4165")  # 32 chars
    assert check_agrees(long_phone) is not None      # past the shortcut: the model's check
    few_digits = with_data(base(), ("owner", "phone"), "+1 (2)")
    assert canonical_event(few_digits) is None and full_path(few_digits) is None
    assert check_agrees(base(type="plate.device_unpaired", data={}))["data"] == {}
    no_data = {k: v for k, v in base(type="plate.device_unpaired").items() if k != "data"}
    assert check_agrees(no_data)["data"] == {}        # filled in as the models do
    assert validate_batch([no_data, no_data | {"id": "2"}], NOW)[0][1]["data"] == {}
    assert canonical_event(base(type="plate.owner_updated", data={})) is None
    assert check_agrees(base(type="plate.owner_updated", data={"name": "B"})) is not None


MUTATIONS = st.sampled_from([
    None, "", " ", "x", "1.0", "1.1", 0, 1, -1, 2019, 1885, 2101, True, 1.5, [], {}, ["a"],
    "x" * 129, "x" * 513, "a\nb", "a\u202eb", "\ud800", "ca-on/abc 123", "CA-ON/ABC123",
    "CA-ON/ABCDEFGHIJK", "2026-01-05T15:04:05Z", "2026-13-05T15:04:05Z", "2199-12-31",
    "2201-01-01", "1899-12-31", "2026-02-30", "2026-04-31", "2026-01-05T24:00:00Z",
    "2026-01-05T15:04:60Z", "2099-01-01T00:00:00Z", "passenger", "insurance_lapsed",
    "en", "EN", "application/json", "plate.renewed", "own-1", "a@b.c", "+1 555 0100",
    "12", "((((1234))))", "VIN 1", "/registry/x",
])


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths(child, (*prefix, index))
    return out


def mutate(event: Any, path: tuple, replacement: Any, drop: bool) -> Any:
    event = copy.deepcopy(event)
    node = event
    for part in path[:-1]:
        node = node[part]
    if drop and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(replacement)
    return event


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SIMULATED[:300]), st.data())
def test_fast_path_never_accepts_what_the_full_path_would_not_print_the_same(
        event: dict[str, Any], data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(event) + [("extra",), ("data", "extra")]))
        if path[:1] == ("data",) and not isinstance(event.get("data"), dict):
            continue
        event = mutate(event, path, data.draw(MUTATIONS), data.draw(st.booleans()))
    check_agrees(event)


def test_every_class_level_validator_of_the_models_is_handled() -> None:
    models = [*EVENT_MODELS.values(), *DATA_MODELS.values(), Owner, Vehicle, Address]
    names = set()
    for model in models:
        decorators = model.__pydantic_decorators__
        names |= set(decorators.field_validators) | set(decorators.model_validators)
        assert not decorators.validators and not decorators.root_validators
        assert not decorators.field_serializers and not decorators.model_serializers
    assert names == set(HANDLED_VALIDATORS)


def _largest_json(schema: dict[str, Any], defs: dict[str, Any]) -> int:
    """An upper bound of the compact JSON size of any value the schema accepts."""
    if "$ref" in schema:
        return _largest_json(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "oneOf" in schema or "anyOf" in schema:
        return max(_largest_json(s, defs) for s in schema.get("oneOf") or schema["anyOf"])
    if "enum" in schema or "const" in schema:
        return max(len(orjson.dumps(v)) for v in schema.get("enum", [schema.get("const")]))
    kind = schema.get("type")
    if kind == "object":
        assert schema.get("additionalProperties") is False
        return 2 + sum(len(orjson.dumps(name)) + 2 + _largest_json(s, defs)
                       for name, s in schema["properties"].items())
    if kind == "array":
        return 2 + schema["maxItems"] * (_largest_json(schema["items"], defs) + 1)
    if kind == "string":
        if "maxLength" in schema:
            return 2 + 6 * schema["maxLength"]   # every character escaped (\\uXXXX)
        if "pattern" in schema:  # dates, times, normalized keys: no unbounded repetition
            assert "*" not in schema["pattern"] and "+" not in schema["pattern"]
            return 2 + len(schema["pattern"])
        # The plate key's own validator: ASCII, at most 2 * MAX_RAW_LENGTH + 1 characters.
        return 2 + 6 * (2 * MAX_RAW_LENGTH + 1)
    if kind == "integer":
        return 20
    raise AssertionError(f"unbounded schema {schema}")


def test_no_canonical_event_can_be_too_large() -> None:
    schema = CANONICAL_EVENT_ADAPTER.json_schema()
    assert _largest_json(schema, schema.get("$defs", {})) < MAX_EVENT_BYTES


def test_validate_batch_gives_the_full_paths_answers() -> None:
    future = base(id="f", time=(NOW + timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    items = [base(id="a"), base(id="b", subject="ca-on/x 1"), base(id="c", time="bad"), future,
             base(id="e", time="2026-01-05T10:04:05-05:00"), base(id="a", source="/other"),
             base(id="a")]
    events, errors = validate_batch(items, NOW)
    assert [(e["index"], e["reason"]) for e in errors] == [(2, "schema_invalid"),
                                                          (3, "future_time")]
    with pytest.raises(Rejection) as info:
        parse_event_obj(future, now=NOW)
    assert errors[1]["detail"] == info.value.detail
    expected = [full_path(items[i]) for i in (0, 1, 4, 5, 6)]
    assert [orjson.dumps(e) for e in events] == expected
    assert orjson.dumps(normalized(items[0], NOW)) == full_path(items[0])


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("now", [NOW, NOW + timedelta(microseconds=1),
                                 NOW + timedelta(microseconds=999_999)])
def test_whole_canonical_batches_get_the_same_answers_as_one_by_one(now: datetime) -> None:
    policy = compile_policy(DEFAULT_POLICY)
    edge = now + timedelta(minutes=5)
    cases = [
        [base(id="a"), base(id="b")],
        [base(id="a", time=at(edge)), base(id="b", time=at(edge + timedelta(seconds=1)))],
        [base(id="a"), base(id="a")],                                   # exact repeat
        [base(id="a"), base(id="a", subject="CA-ON/OTHER1")],          # id_conflict
        [base(id="a"), base(id="b", source="/police/x")],              # policy
        [base(id="a"), base(id="b", source="/elsewhere/x")],           # key's prefixes
    ]
    for items in cases:
        fast = validate_batch(copy.deepcopy(items), now, sources=("/registry/", "/police/"),
                              policy=policy)
        each = _validate_each(copy.deepcopy(items), now, ("/registry/", "/police/"), policy)
        assert orjson.dumps(fast) == orjson.dumps(each)
    on_time, late = validate_batch(cases[1], now)
    assert [e["id"] for e in on_time] == ["a"] and [e["index"] for e in late] == [1]
