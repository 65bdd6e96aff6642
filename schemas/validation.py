"""Turning raw Kafka values / HTTP bodies into plate events, or into a classified rejection.

Checks run in this order and the first failing stage decides the reason:

1. ``too_large``: the value is over :data:`MAX_EVENT_BYTES` (64 KiB).
2. ``malformed_json``: no value at all (a tombstone), not UTF-8 JSON, nesting
   deeper than :data:`MAX_JSON_DEPTH`, duplicate object keys, or a top level
   that is not an object.
3. ``schema_invalid`` for a missing or non-string ``type``;
   ``unknown_type`` for a string ``type`` that is not one of the 11 event types.
4. ``invalid_plate``: ``subject`` is a string but not a valid plate key
   (a missing or non-string ``subject`` is ``schema_invalid``).
5. ``schema_invalid``: everything else the models reject; the detail lists
   one ``path: problem`` message per problem, separated by ``"; "``.
6. ``future_time``: ``time`` more than :data:`FUTURE_TOLERANCE` after ``now``.

Rejection details never contain field *values* (plates, names, e-mail
addresses...), only paths and rules, so they are safe for logs and DLQ headers.
Duplicate JSON keys are rejected because parsers disagree on which value wins,
and the same bytes must mean the same event to every consumer.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from schemas._types import NO_CONTROL_PATTERN, SAFE_ID_PATTERN
from schemas.events import (
    EMAIL_PATTERN,
    ENVELOPE_FIELDS,
    PHONE_PATTERN,
    PLATE_EVENT_ADAPTER,
    PLATE_EVENTS_ADAPTER,
    VIN_PATTERN,
    Event,
    EventType,
    extension_value_problem,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_JSON_DEPTH",
    "FUTURE_TOLERANCE",
    "RejectReason",
    "Rejection",
    "check_not_future",
    "decode_json",
    "parse_event_bytes",
    "parse_event_obj",
    "parse_event_objs",
]

MAX_EVENT_BYTES = 64 * 1024
#: Deepest JSON nesting looked at; plate events need 4 levels.
MAX_JSON_DEPTH = 64
FUTURE_TOLERANCE = timedelta(minutes=5)
#: Longest ``detail`` text (it travels as a Kafka header and in HTTP problems).
MAX_DETAIL_CHARS = 1000


class RejectReason(StrEnum):
    """DLQ reasons of the contract (``x-dlq-reason``)."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA_INVALID = "schema_invalid"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PLATE = "invalid_plate"
    FUTURE_TIME = "future_time"
    ID_CONFLICT = "id_conflict"
    TOO_LARGE = "too_large"
    UNAUTHORIZED_SOURCE = "unauthorized_source"


class Rejection(Exception):
    """An event that must go to the dead-letter topic.

    ``reason`` is a :class:`RejectReason` (a ``str``); ``detail`` is short
    human text without personal data.
    """

    def __init__(self, reason: RejectReason | str, detail: str) -> None:
        self.reason = RejectReason(reason)
        self.detail = detail[:MAX_DETAIL_CHARS]
        super().__init__(f"{self.reason}: {self.detail}")


# --------------------------------------------------------------------------- JSON


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey
    return result


def _depth_ok(value: object, limit: int) -> bool:
    """True when ``value`` nests containers (objects, arrays) at most ``limit`` deep."""
    if limit <= 0:
        return not isinstance(value, dict | list)
    children = value.values() if isinstance(value, dict) else value \
        if isinstance(value, list) else ()
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and not _depth_ok(child, limit - 1):
            return False
    return True


def _repeats_a_key(raw: bytes, value: dict[str, Any] | list[Any]) -> bool:
    """True when the JSON text ``raw``, which orjson decoded to ``value``, repeats a key in
    one of its objects (orjson silently keeps the last value). The one duplicate-key check.

    Without a backslash, ``raw`` has no escapes: its strings are their decoded text. A
    colon in a JSON text either ends a key or is inside a string, and orjson writes the
    strings' colons as they are; so ``raw``'s colons are its keys plus those of its
    strings, and those of orjson's output of ``value`` are the decoded keys plus those of
    the decoded strings, which are ``raw``'s strings less those of dropped (repeated) keys
    and their values. The counts are equal exactly when no key was dropped. Texts with
    escapes (and integers beyond 64 bits, which orjson does not write) are parsed again
    by the standard library with a hook that sees every key.
    """
    if b"\\" not in raw:
        try:
            return raw.count(b":") != orjson.dumps(value).count(b":")
        except orjson.JSONEncodeError:
            pass
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except _DuplicateKey:
        return True
    except (ValueError, RecursionError):  # e.g. integers of more than 4300 digits
        raise Rejection(RejectReason.MALFORMED_JSON, "not valid JSON") from None
    return False


def decode_json(raw: bytes | bytearray | memoryview | str) -> Any:
    """Strictly decode one JSON text (RFC 8259) or raise ``Rejection(malformed_json)``.

    Rejects invalid UTF-8, NaN/Infinity, nesting deeper than
    :data:`MAX_JSON_DEPTH` and duplicate object keys. Does not check the size.
    """
    if isinstance(raw, memoryview | bytearray):
        raw = bytes(raw)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        detail = "nesting too deep" if "depth" in str(exc) else "not valid JSON"
        raise Rejection(RejectReason.MALFORMED_JSON, detail) from None
    if isinstance(value, dict | list):
        if not _depth_ok(value, MAX_JSON_DEPTH):
            raise Rejection(RejectReason.MALFORMED_JSON,
                            f"nesting deeper than {MAX_JSON_DEPTH} levels")
        if _repeats_a_key(raw.encode() if isinstance(raw, str) else raw, value):
            raise Rejection(RejectReason.MALFORMED_JSON, "duplicate object key")
    return value


# --------------------------------------------------------------------------- messages

_SAFE_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,40}", re.ASCII)
_EXTENSION_NAME_RE = re.compile(r"[a-z0-9]{1,20}", re.ASCII)
_EVENT_TYPES = frozenset(t.value for t in EventType)


_PATTERN_MESSAGES = {
    NO_CONTROL_PATTERN: "must not contain control characters (C0 or C1 controls, U+2028, "
                        "U+2029 or bidirectional controls such as U+202E)",
    SAFE_ID_PATTERN: "must start with a letter or digit and use only A-Z a-z 0-9 . _ : @ -",
    VIN_PATTERN: "must be 1 to 32 ASCII letters or digits",
    EMAIL_PATTERN: "value is not a valid email address",
    PHONE_PATTERN: "value is not a valid phone number",
}


def _segment(part: object) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    text = str(part)
    return text if _SAFE_SEGMENT_RE.fullmatch(text) else "<field>"


def _path(loc: tuple[int | str, ...]) -> str:
    if loc and loc[0] in _EVENT_TYPES:  # tag of the discriminated union
        loc = loc[1:]
    out = ""
    for part in loc:
        seg = _segment(part)
        out += seg if seg.startswith("[") or not out else f".{seg}"
    return out or "event"


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "string_too_short":
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else (f"must be at least {ctx.get('min_length')} characters")
        )
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_type":
        return "must be a string"
    if kind == "string_unicode":
        return "must be valid Unicode text (no lone surrogates)"
    if kind == "string_pattern_mismatch":
        return _PATTERN_MESSAGES.get(str(ctx.get("pattern")), "invalid format or characters")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind == "bool_type":
        return "must be a boolean"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    if kind == "list_type":
        return "must be an array"
    if kind == "enum":
        return f"must be one of {ctx.get('expected')}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        op = {
            "greater_than_equal": ">=",
            "less_than_equal": "<=",
            "greater_than": ">",
            "less_than": "<",
        }[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    # Custom errors of this package carry safe, hand-written messages; pydantic's
    # built-in messages describe the expectation, not the input.
    return str(error["msg"])


def property_names(schema: Any) -> frozenset[str]:
    """Every property name in a JSON schema, nested and referenced definitions included."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                names.update(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return frozenset(names)


@functools.cache
def _field_names() -> frozenset[str]:
    """Every property name of the event schemas (names this package defines)."""
    return property_names(PLATE_EVENT_ADAPTER.json_schema())


def _problems(errors: list[Any]) -> list[str]:
    """Distinct problem texts in error order; stops once they fill a detail
    (a very wide hostile object can have thousands of errors)."""
    def texts() -> Iterator[str]:
        for error in errors:
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden" and loc and loc[-1] not in _field_names():
                loc = loc[:-1]  # the key is the client's own text: name its object instead
            yield f"{_path(loc)}: {_message(error)}"

    return _distinct_within_detail(texts())


def _distinct_within_detail(texts: Iterable[str]) -> list[str]:
    """The distinct ``texts`` in order, read only until they fill a detail
    (``MAX_DETAIL_CHARS``, with a separator each)."""
    problems: dict[str, None] = {}
    size = 0
    for text in texts:
        if text not in problems:
            problems[text] = None
            size += len(text) + 2
            if size > MAX_DETAIL_CHARS:
                break
    return list(problems)


_ENVELOPE_FIELDS = ENVELOPE_FIELDS


def _extension_problems(obj: dict[str, Any]) -> list[str]:
    """Same rule as the envelope's check (``schemas.events``), but reported with the other problems
    (distinct texts, at most about a detail's worth)."""
    if obj.keys() <= _ENVELOPE_FIELDS:
        return []

    def texts() -> Iterator[str]:
        for position, (name, value) in enumerate(obj.items(), 1):
            if name in _ENVELOPE_FIELDS:
                continue
            shown = name if _SAFE_SEGMENT_RE.fullmatch(name) else "<attribute>"
            if not _EXTENSION_NAME_RE.fullmatch(name):  # not an extension name: never echoed
                yield (f"attribute number {position}: unknown attribute "
                       "(extension names must match ^[a-z0-9]{1,20}$)")
            elif (problem := extension_value_problem(value)) is not None:
                yield f"{shown}: extension attribute {problem}"

    return _distinct_within_detail(texts())


# --------------------------------------------------------------------------- parsing


def _precheck(obj: dict[str, Any]) -> list[str]:
    """What is decided before the schema: ``type`` (``schema_invalid`` / ``unknown_type``);
    returns the extension attributes' problems, which are reported with the schema's
    (``schema_invalid``). A ``subject`` that is a string but no plate key is
    ``invalid_plate`` whatever else is wrong: :func:`_schema_rejection` finds it among the
    schema's errors (the plate key type's own check)."""
    event_type = obj.get("type")
    if "type" not in obj:
        raise Rejection(RejectReason.SCHEMA_INVALID, "type: field required")
    if not isinstance(event_type, str):
        raise Rejection(RejectReason.SCHEMA_INVALID, "type: must be a string")
    if event_type not in _EVENT_TYPES:
        shown = event_type if _SAFE_SEGMENT_RE.fullmatch(event_type) else "<type>"
        raise Rejection(RejectReason.UNKNOWN_TYPE, f"type: unknown event type {shown!r}")
    return _extension_problems(obj)


def _schema_rejection(problems: list[str], errors: list[Any]) -> Rejection:
    for error in errors:
        if error["type"] == "invalid_plate" and error["loc"][1:] == ("subject",):
            return Rejection(RejectReason.INVALID_PLATE, f"subject: {error['msg']}")
    errors = [e for e in errors if e["type"] not in ("extension_name", "extension_value")]
    seen = set(problems)
    problems = problems + [p for p in _problems(errors) if p not in seen]
    return Rejection(RejectReason.SCHEMA_INVALID, "; ".join(problems) or "invalid event")


def _error_list(exc: ValidationError) -> list[Any]:
    return list(exc.errors(include_url=False, include_input=False))


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _parse(obj: object, now: datetime) -> Event:
    _check_now(now)
    if not isinstance(obj, dict):
        raise Rejection(RejectReason.MALFORMED_JSON, "event must be a JSON object")
    problems = _precheck(obj)
    try:
        normalized = PLATE_EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _schema_rejection(problems, _error_list(exc)) from None
    if problems:
        raise _schema_rejection(problems, [])
    event = Event.of(normalized)
    check_not_future(event.time, now)
    return event


def check_not_future(time: datetime, now: datetime) -> None:
    """Raise ``Rejection(future_time)`` when ``time`` is more than
    :data:`FUTURE_TOLERANCE` after ``now`` (the registry's clock)."""
    if time > now + FUTURE_TOLERANCE:
        raise Rejection(
            RejectReason.FUTURE_TIME,
            f"time: more than {int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes "
            "ahead of the registry clock",
        )


def parse_event_bytes(raw: bytes | bytearray | memoryview | None, *, now: datetime) -> Event:
    """Validate one Kafka message value; raise :class:`Rejection` if it must be dead-lettered.

    ``now`` is the registry's clock (timezone-aware) used for ``future_time``.
    This, :func:`parse_event_obj` and :func:`parse_event_objs` are the entry points of
    the one event validator (:data:`schemas.events.PLATE_EVENT_ADAPTER`); the registry
    consumer and the ingest API take them, and a check that applies to every event
    (e.g. a producer's signature) belongs beside them.
    """
    if raw is None:
        raise Rejection(RejectReason.MALFORMED_JSON, "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise Rejection(RejectReason.TOO_LARGE, f"value is over {MAX_EVENT_BYTES} bytes")
    return _parse(decode_json(raw), now)


def _json_size(obj: dict[str, Any]) -> int:
    """Bytes of the compact JSON serialization of ``obj`` (``malformed_json`` when it has
    none)."""
    try:
        return len(orjson.dumps(obj))
    except (TypeError, orjson.JSONEncodeError):
        try:  # e.g. integers beyond 64 bits, which the stdlib decoder produces
            return len(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError, RecursionError):
            raise Rejection(RejectReason.MALFORMED_JSON, "not representable as JSON") from None


def _shape_rejection(obj: dict[str, Any], depth_known: bool) -> Rejection | None:
    """``malformed_json`` (nesting) or ``too_large`` for an object, the checks that come
    before the schema's; None when neither applies."""
    if not depth_known and not _depth_ok(obj, MAX_JSON_DEPTH):
        return Rejection(RejectReason.MALFORMED_JSON,
                         f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        size = _json_size(obj)
    except Rejection as rejection:
        return rejection
    if size > MAX_EVENT_BYTES:
        return Rejection(RejectReason.TOO_LARGE, f"event is over {MAX_EVENT_BYTES} bytes as JSON")
    return None


def parse_event_obj(obj: object, *, now: datetime) -> Event:
    """Validate one already-decoded JSON value (e.g. an element of an HTTP batch).

    Same checks as :func:`parse_event_bytes`; ``too_large`` applies to the
    compact JSON serialization of ``obj``.
    """
    result = parse_event_objs([obj], now=now)[0]
    if isinstance(result, Rejection):
        raise result
    return result


def parse_event_objs(objs: list[Any], *, now: datetime,
                     depth_known: bool = False) -> list[Event | Rejection]:
    """:func:`parse_event_obj` of every item, in order, each an :class:`Event` or its
    :class:`Rejection`; the schema is checked for the whole list in one call.

    The nesting and size checks come first in the order of reasons, but they are made
    only where they can fail: an object the schema accepts nests at most a few levels,
    and without extension attributes its every string is bounded, which keeps it under
    :data:`MAX_EVENT_BYTES` (``tests/unit/test_schemas_events.py`` holds the largest one
    under it). ``depth_known``: the items come from :func:`decode_json`, which already
    held them to the nesting limit.
    """
    _check_now(now)
    results: list[Event | Rejection | None] = [None] * len(objs)
    problems: dict[int, list[str]] = {}
    for index, obj in enumerate(objs):
        if not isinstance(obj, dict):
            results[index] = Rejection(RejectReason.MALFORMED_JSON, "event must be a JSON object")
            continue
        try:
            problems[index] = _precheck(obj)
        except Rejection as rejection:
            results[index] = _shape_rejection(obj, depth_known) or rejection
    for index, outcome in _validated(objs, list(problems), problems):
        obj = objs[index]
        if isinstance(outcome, Rejection):
            results[index] = _shape_rejection(obj, depth_known) or outcome
            continue
        if len(obj) > len(outcome) or not obj.keys() <= ENVELOPE_FIELDS:
            shape = _shape_rejection(obj, depth_known)   # extension attributes: any size
            if shape is not None:
                results[index] = shape
                continue
        event = Event.of(outcome)
        try:
            check_not_future(event.time, now)
            results[index] = event
        except Rejection as rejection:
            results[index] = rejection
    return [r for r in results if r is not None]


def _validated(objs: list[Any], indexes: list[int], problems: dict[int, list[str]]
               ) -> list[tuple[int, dict[str, Any] | Rejection]]:
    """(index, normalized object or ``schema_invalid`` rejection) of ``objs[i]`` for each
    of ``indexes`` (``problems``: those found before the schema, by index): one schema call
    for them all, and one more for those that pass when some do not (a list's validation
    returns nothing when any item fails)."""
    try:
        valid = PLATE_EVENTS_ADAPTER.validate_python([objs[i] for i in indexes])
    except ValidationError as exc:
        errors: dict[int, list[Any]] = {}
        for error in _error_list(exc):
            position, *loc = error["loc"]
            errors.setdefault(indexes[position], []).append({**error, "loc": tuple(loc)})
        passing = [i for i in indexes if i not in errors]
        out: list[tuple[int, dict[str, Any] | Rejection]] = [
            (i, _schema_rejection(problems[i], errors[i])) for i in errors]
        return out + (_validated(objs, passing, problems) if passing else [])
    return [(i, _schema_rejection(problems[i], []) if problems[i] else event)
            for i, event in zip(indexes, valid, strict=True)]
