"""Opaque page cursors of the registry API, one encoding for every paged route.

A cursor is ``base64url("<kind>:<payload>")`` without padding (``d:``/``f:`` for
the hotlist, ``a:`` for the audit log). Clients must treat it as opaque;
:func:`open_cursor` refuses anything else with :class:`InvalidCursor`, whose
message never echoes the input.
"""

from __future__ import annotations

import base64
import binascii

MAX_CURSOR_LENGTH = 200


class InvalidCursor(ValueError):
    """The value is not a cursor this API handed out."""


def seal(kind: str, payload: str) -> str:
    """The cursor text for ``kind`` and ``payload``."""
    return base64.urlsafe_b64encode(f"{kind}:{payload}".encode()).decode().rstrip("=")


def open_cursor(text: object, max_length: int = MAX_CURSOR_LENGTH) -> tuple[str, str]:
    """``(kind, payload)`` of a cursor made by :func:`seal`; :class:`InvalidCursor` otherwise."""
    if not isinstance(text, str) or not 1 <= len(text) <= max_length or not text.isascii():
        raise InvalidCursor("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidCursor("malformed cursor") from None
    kind, sep, payload = raw.partition(":")
    if not sep:
        raise InvalidCursor("malformed cursor")
    return kind, payload
