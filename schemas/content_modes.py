"""CloudEvents binary content mode: the attributes in headers, the body (or Kafka value)
the ``data``. Turned here into the structured event object, which then takes the one
validation path of every event (``schemas.validation``): both modes mean the same event
and follow the same rules (contract sections 2 and 5).

* Kafka (:func:`kafka_binary_event`): a message with a ``ce_`` header is binary
  (:func:`schemas.signing.is_binary`); ``ce_<attribute>`` headers hold the attributes as
  UTF-8 text, ``content-type`` the ``datacontenttype``, the value the data (JSON).
* HTTP (:func:`http_binary_event`): ``ce-<attribute>`` headers (names in any case),
  values percent-encoded as the CloudEvents HTTP binding says; ``Content-Type`` the
  ``datacontenttype``; the body the data.

Every attribute is a string in binary mode. An empty value or body is an event without
``data``. A repeated attribute header, a header value that is not UTF-8, or ``data``
given as a header is ``schema_invalid``; data that is not JSON is ``malformed_json``;
a value over 64 KiB is ``too_large``. Details name headers only when their names are
plain (``ce_`` or ``ce-`` and up to 20 of a-z 0-9), never their values. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from schemas.signing import CE_PREFIX, Headers
from schemas.validation import MAX_EVENT_BYTES, Rejection, RejectReason, decode_json

HTTP_PREFIX = "ce-"
CONTENT_TYPE = "content-type"
_PLAIN_NAME_RE = re.compile(r"[a-z0-9]{1,20}", re.ASCII)
_NOT_ATTRIBUTES = frozenset({"data", "data_base64"})


def _shown(prefix: str, name: str) -> str:
    return f"{prefix}{name}" if _PLAIN_NAME_RE.fullmatch(name) else "a header"


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(RejectReason.SCHEMA_INVALID, f"{where}: not UTF-8 text") from None


def _event(attributes: Iterable[tuple[str, bytes]], prefix: str, content_type: str | None,
           data: bytes | None) -> dict[str, Any]:
    """The structured event object of binary-mode ``attributes`` (name without prefix,
    value bytes), content type and data bytes."""
    if data is not None and len(data) > MAX_EVENT_BYTES:
        raise Rejection(RejectReason.TOO_LARGE, f"value is over {MAX_EVENT_BYTES} bytes")
    event: dict[str, Any] = {}
    for name, raw in attributes:
        shown = _shown(prefix, name)
        if name in event:
            raise Rejection(RejectReason.SCHEMA_INVALID, f"{shown}: repeated header")
        if name in _NOT_ATTRIBUTES:
            raise Rejection(RejectReason.SCHEMA_INVALID,
                            f"{shown}: in binary mode the data is the message body")
        event[name] = _text(raw, shown)
    if content_type is not None and "datacontenttype" not in event:
        event["datacontenttype"] = content_type
    if data:
        event["data"] = decode_json(data)
    return event


def kafka_binary_event(headers: Headers, value: bytes | None) -> dict[str, Any]:
    """The event object of a binary-mode Kafka message, or :class:`Rejection`."""
    attributes = []
    content_type = None
    for name, raw in headers:
        if name.startswith(CE_PREFIX):
            attributes.append((name[len(CE_PREFIX):], raw or b""))
        elif name == CONTENT_TYPE:
            if content_type is not None:
                raise Rejection(RejectReason.SCHEMA_INVALID, "content-type: repeated header")
            content_type = _text(raw or b"", "content-type")
    return _event(attributes, CE_PREFIX, content_type, value)


def http_binary_event(headers: Iterable[tuple[bytes, bytes]], content_type: str | None,
                      body: bytes) -> dict[str, Any]:
    """The event object of a binary-mode HTTP request (``headers``: every (name, value)
    of the request as sent, names in any case), or :class:`Rejection`."""
    attributes = []
    for name, value in headers:
        lower = name.decode("latin-1").lower()
        if lower.startswith(HTTP_PREFIX):
            attributes.append((lower[len(HTTP_PREFIX):], unquote_to_bytes(value)))
    return _event(attributes, HTTP_PREFIX, content_type, body)


def has_http_attributes(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP request carries binary-mode attributes (a ``ce-`` header)."""
    return any(name[:3].lower() == b"ce-" for name, _ in headers)
