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
    PHONE_PATTERN,
    PLATE_EVENT_ADAPTER,
    VIN_PATTERN,
    BaseEvent,
    EventType,
    extension_value_problem,
)
from schemas.plates import InvalidPlate, parse_plate_key

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_JSON_DEPTH",
    "FUTURE_TOLERANCE",
    "RejectReason",
    "Rejection",
    "check_not_future",
    "decode_json",
    "keys_unique_shallow",
    "parse_event_bytes",
    "parse_event_obj",
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
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


#: The closing quote of every object key is followed by optional whitespace and a
#: colon; so is an occasional quote inside or at the start of a string. The number
#: of matches is therefore never less than the number of keys in the text.
_KEY_END_RE = re.compile(rb'"[ \t\n\r]*:')
#: A quote followed by whitespace.
_QUOTE_SPACE_RE = re.compile(rb'"[ \t\n\r]')


class _TooDeep(Exception):
    pass


def _key_total(value: dict | list, depth: int = 1) -> int:
    """Keys of every object in a decoded value; raises ``_TooDeep`` where
    :func:`_depth_ok` would find nesting deeper than :data:`MAX_JSON_DEPTH`."""
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    if type(value) is dict:
        total = len(value)
        children: Any = value.values()
    else:
        total = 0
        children = value
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            total += _key_total(child, depth + 1)
    return total


def _no_duplicate_keys_fast(raw: bytes, value: dict | list) -> bool:
    """True when ``raw`` provably has no duplicate object keys (False: unknown).

    orjson keeps the last of duplicate keys, so the decoded objects hold fewer
    keys than the text does exactly when there are duplicates. The text holds at
    most as many keys as :data:`_KEY_END_RE` matches; when that upper bound
    equals the decoded keys, no key was dropped. Escapes or ``":`` inside
    strings only make the bound larger (then the caller re-parses to decide).
    Raises ``_TooDeep`` for nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    return _key_bound(raw) == _key_total(value)


def keys_unique_shallow(raw: bytes, value: dict | list) -> bool:
    """True when ``raw``, which orjson decoded to ``value``, provably has no duplicate
    object keys (False: unknown). For values whose nesting the caller already knows
    to be shallow (e.g. schema-valid events): this does not check depth.

    Cheaper than :func:`_no_duplicate_keys_fast` (no Python walk, single-byte
    scans). Without a backslash, ``raw`` has no escapes: its strings are their
    decoded text. A colon in a JSON text is either inside a string or ends a key,
    and orjson writes strings' colons as they are; so the colons of ``raw`` are its
    keys plus those of its strings, and the colons of orjson's output are the
    decoded keys plus those of the decoded strings, which are ``raw``'s strings
    minus those of dropped (repeated) keys. The counts are equal exactly when no
    key was dropped.
    """
    if b"\\" in raw:
        return False
    try:
        decoded = orjson.dumps(value).count(b":")
    except orjson.JSONEncodeError:  # e.g. integers beyond 64 bits
        return False
    return raw.count(b":") == decoded


def _key_bound(raw: bytes) -> int:
    """At least the number of object keys in the JSON text ``raw`` (see _KEY_END_RE)."""
    # Raw tabs and line breaks cannot be inside JSON strings: without any, only a quote
    # followed by a space can be one followed by whitespace (memchr-fast checks).
    if b'" ' in raw or ((b"\n" in raw or b"\t" in raw or b"\r" in raw)
                        and _QUOTE_SPACE_RE.search(raw) is not None):
        return len(_KEY_END_RE.findall(raw))
    return raw.count(b'":')  # no quote is followed by whitespace: every key ends with '":'


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
    kind = type(value)
    if (kind is dict or kind is list) and type(raw) is bytes:
        try:
            fast = _no_duplicate_keys_fast(raw, value)   # one walk: depth and keys
        except _TooDeep:
            raise Rejection(
                RejectReason.MALFORMED_JSON, f"nesting deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        if fast:
            # Fast path. What the slow path below would still check cannot fail here:
            # depth is within the limit, there are no duplicate keys, and the stdlib
            # decoder accepts every text orjson accepts (its only other refusal,
            # integers of more than 4300 digits, is beyond orjson's double range).
            return value
    if not _depth_ok(value, MAX_JSON_DEPTH):
        raise Rejection(RejectReason.MALFORMED_JSON, f"nesting deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict | list):
        # orjson silently keeps the last of duplicate keys; detect them with a
        # second (bounded: size and depth are already checked) parse.
        try:
            json.loads(raw, object_pairs_hook=_no_duplicates)
        except _DuplicateKey:
            raise Rejection(RejectReason.MALFORMED_JSON, "duplicate object key") from None
        except (ValueError, RecursionError):  # e.g. integers of more than 4300 digits
            raise Rejection(RejectReason.MALFORMED_JSON, "not valid JSON") from None
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


_ENVELOPE_FIELDS = frozenset(BaseEvent.model_fields)


def _extension_problems(obj: dict[str, Any]) -> list[str]:
    """Same rule as ``BaseEvent``'s validator, but reported with the other problems
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


def _parse(obj: object, now: datetime) -> BaseEvent:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not isinstance(obj, dict):
        raise Rejection(RejectReason.MALFORMED_JSON, "event must be a JSON object")

    event_type = obj.get("type")
    if "type" not in obj:
        raise Rejection(RejectReason.SCHEMA_INVALID, "type: field required")
    if not isinstance(event_type, str):
        raise Rejection(RejectReason.SCHEMA_INVALID, "type: must be a string")
    if event_type not in _EVENT_TYPES:
        shown = event_type if _SAFE_SEGMENT_RE.fullmatch(event_type) else "<type>"
        raise Rejection(RejectReason.UNKNOWN_TYPE, f"type: unknown event type {shown!r}")

    subject = obj.get("subject")
    if isinstance(subject, str):
        try:
            parse_plate_key(subject)
        except InvalidPlate as exc:
            raise Rejection(RejectReason.INVALID_PLATE, f"subject: {exc}") from None

    problems = _extension_problems(obj)
    try:
        event = PLATE_EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        errors = [e for e in errors if e["type"] not in ("extension_name", "extension_value")]
        seen = set(problems)
        problems += [p for p in _problems(errors) if p not in seen]
        event = None
    if problems or event is None:
        raise Rejection(RejectReason.SCHEMA_INVALID, "; ".join(problems) or "invalid event")

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


def parse_event_bytes(raw: bytes | bytearray | memoryview | None, *, now: datetime) -> BaseEvent:
    """Validate one Kafka message value; raise :class:`Rejection` if it must be dead-lettered.

    ``now`` is the registry's clock (timezone-aware) used for ``future_time``.
    """
    if raw is None:
        raise Rejection(RejectReason.MALFORMED_JSON, "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise Rejection(RejectReason.TOO_LARGE, f"value is over {MAX_EVENT_BYTES} bytes")
    return _parse(decode_json(raw), now)


def parse_event_obj(obj: object, *, now: datetime) -> BaseEvent:
    """Validate one already-decoded JSON value (e.g. an element of an HTTP batch).

    Same checks as :func:`parse_event_bytes`; ``too_large`` applies to the
    compact JSON serialization of ``obj``.
    """
    if not isinstance(obj, dict):
        raise Rejection(RejectReason.MALFORMED_JSON, "event must be a JSON object")
    if not _depth_ok(obj, MAX_JSON_DEPTH):
        raise Rejection(RejectReason.MALFORMED_JSON, f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        size = len(orjson.dumps(obj))
    except (TypeError, orjson.JSONEncodeError):
        try:  # e.g. integers beyond 64 bits, which the stdlib decoder produces
            size = len(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError, RecursionError):
            raise Rejection(RejectReason.MALFORMED_JSON, "not representable as JSON") from None
    if size > MAX_EVENT_BYTES:
        raise Rejection(RejectReason.TOO_LARGE, f"event is over {MAX_EVENT_BYTES} bytes as JSON")
    return _parse(obj, now)
