"""``schemas.validation.decode_json`` decides exactly like the straightforward algorithm.

``reference_decode`` below is that algorithm (orjson, a depth walk, then a second
parse with a duplicate-key hook); ``decode_json`` finds repeated keys by comparing
colon counts (``_repeats_a_key``) and parses a second time only texts with escapes.
Both must accept and reject the same texts, with the same details.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.validation import (
    MAX_JSON_DEPTH,
    Rejection,
    RejectReason,
    _depth_ok,
    _repeats_a_key,
    decode_json,
)


class _Dup(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Dup
    return result


def reference_decode(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        detail = "nesting too deep" if "depth" in str(exc) else "not valid JSON"
        raise Rejection(RejectReason.MALFORMED_JSON, detail) from None
    if not _depth_ok(value, MAX_JSON_DEPTH):
        raise Rejection(RejectReason.MALFORMED_JSON, f"nesting deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict | list):
        try:
            json.loads(raw, object_pairs_hook=_pairs)
        except _Dup:
            raise Rejection(RejectReason.MALFORMED_JSON, "duplicate object key") from None
        except (ValueError, RecursionError):
            raise Rejection(RejectReason.MALFORMED_JSON, "not valid JSON") from None
    return value


def outcome(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return ("ok", fn(raw))
    except Rejection as exc:
        return ("rejected", (exc.reason, exc.detail))


def assert_same(raw: bytes) -> None:
    assert outcome(decode_json, raw) == outcome(reference_decode, raw)


# --- random JSON texts written by hand: duplicate keys, odd whitespace, escapes ---

_WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n ", "  "])
# Few distinct keys so duplicates are frequent; some spell the same key differently.
_KEYS = st.sampled_from(['"a"', '"b"', '"\\u0061"', '"a\\":"', '":"', '"\\\\"', '" a"', '""'])
_SCALARS = st.sampled_from([
    "1", "-2.5e3", "true", "false", "null", '"x"', '"\\":"', '":"', '" : "', '"a\\"b"',
    '"\\\\"', '"{["', '"}]"', '"\\u0022:"', "1e400", "9" * 400,
])


def _text(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _SCALARS
    child = _text(depth - 1)
    members = st.lists(st.tuples(_WS, _KEYS, _WS, _WS, child, _WS), max_size=4)
    obj = st.builds(
        lambda ms: "{" + ",".join(f"{a}{k}{b}:{c}{v}{d}" for a, k, b, c, v, d in ms) + "}",
        members,
    )
    arr = st.builds(lambda vs: "[" + ",".join(vs) + "]", st.lists(child, max_size=4))
    return st.one_of(_SCALARS, obj, arr)


@settings(max_examples=1500, deadline=None)
@given(_text(5), _WS, _WS)
@example('{"a":1,"a":2}', "", "")
@example('{"a" :1,"a" :2,"x":"\\":"}', "", "")
@example('{"a":{"b":1},"a ":{"b":1,"b":2}}', "", "")
@example('{"\\u0061":1,"a":2}', "", "")
def test_decode_agrees_with_reference(text: str, before: str, after: str) -> None:
    assert_same((before + text + after).encode())


def _nest(depth: int, inner: str, dup_at: int) -> str:
    out = inner
    for level in range(depth):
        out = '{"k":' + out + (',"k":0' if level == dup_at else "") + "}"
    return out


#: Small JSON values of every kind, nested (the round-trip and key-check properties).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=25,
)

@pytest.mark.parametrize("depth", [1, 2, 10, 63, 64, 65, 70, 200])
@pytest.mark.parametrize("dup_at", [-1, 0, 1, 30, 62, 63, 64, 100])
def test_duplicates_and_depth_at_every_level(depth: int, dup_at: int) -> None:
    assert_same(_nest(depth, "1", dup_at).encode())
    assert_same(_nest(depth, "[[]]", dup_at).encode())


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_serialized_values_round_trip(value: Any) -> None:
    for raw in (orjson.dumps(value), json.dumps(value).encode(),
                json.dumps(value, indent=2).encode()):
        assert_same(raw)


@settings(max_examples=1000, deadline=None)
@given(_text(4))
@example('{"a":1,"a":2,"s":"\\u0022:"}')
@example('{"a":1,"a":2,"s":"\\":"}')
@example('[{"a":"x\\":"},{"a":1,"a":"\\":"}]')
@example('{"a":1,"a":":","b":":"}')
@example('{"a" : 1 ,"a": 2}')
def test_the_key_check_finds_exactly_the_repeated_keys(text: str) -> None:
    raw = text.encode()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(value, dict | list):
        return
    try:
        json.loads(raw, object_pairs_hook=_pairs)
        duplicated = False
    except _Dup:
        duplicated = True
    except (ValueError, RecursionError):
        return
    assert _repeats_a_key(raw, value) is duplicated


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_compact_texts_without_escapes_repeat_no_key(value: Any) -> None:
    raw = orjson.dumps(value)
    if isinstance(value, dict | list) and b"\\" not in raw:
        assert _repeats_a_key(raw, value) is False


def test_str_and_memoryview_inputs_still_decide_the_same() -> None:
    for text in ('{"a":1,"a":2}', '{"a":[1,{"b":2}]}', "[" * 65 + "]" * 65):
        for raw in (text, memoryview(text.encode()), bytearray(text.encode())):
            assert outcome(decode_json, raw) == outcome(reference_decode, text.encode())


def test_texts_without_escapes_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("slow path taken")

    monkeypatch.setattr("schemas.validation.json.loads", fail)
    raw = orjson.dumps({"type": "plate.renewed", "subject": "CA-ON/A1", "data": {"a": [{}]}})
    assert decode_json(raw)["data"] == {"a": [{}]}
    assert decode_json(json.dumps({"a": {"b": "c d"}}, indent=1).encode()) == {"a": {"b": "c d"}}


def test_large_batches_are_parsed_once_and_still_catch_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [{"type": "plate.renewed", "subject": f"CA-ON/A{i}",
               "data": {"expires_on": "2027-01-01", "list": [[], {}]}} for i in range(200)]
    raw = orjson.dumps(events)
    assert raw.count(b"{") > MAX_JSON_DEPTH
    duplicated = raw.replace(b'"subject":"CA-ON/A57"', b'"subject":"x","subject":"CA-ON/A57"')
    deep = orjson.dumps([events, [[[[]]]]]).replace(b"[[[[]]]]", b"[" * 70 + b"]" * 70)
    expected = {r: outcome(reference_decode, r) for r in (raw, duplicated, deep)}
    assert expected[duplicated][1][1] == "duplicate object key"
    assert expected[deep][1][1].startswith("nesting deeper")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("slow path taken")

    monkeypatch.setattr("schemas.validation.json.loads", fail)
    assert outcome(decode_json, raw) == expected[raw]   # no second parse
    assert outcome(decode_json, deep) == expected[deep]  # the depth walk decides
    assert outcome(decode_json, duplicated) == expected[duplicated]
