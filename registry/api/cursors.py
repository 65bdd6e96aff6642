"""Opaque page cursors of the registry API, one encoding for every paged route.

A cursor is ``"<kind>:<payload>"`` (``d:``/``f:`` for the hotlist, ``a:`` for the
audit log) sealed by :class:`registry.api.sealing.Sealer`: encrypted and authenticated
with keys from ``PLATEREG_CURSOR_SECRET``, so it reveals no plate. Clients must
treat it as opaque; :func:`open_cursor` refuses anything else (malformed, altered,
sealed under another secret, or the unsealed base64 of revision 1) with
:class:`InvalidCursor`, whose message never echoes the input.
"""

from __future__ import annotations

from registry.api.sealing import Sealer, Unsealable

MAX_CURSOR_LENGTH = 200


class InvalidCursor(ValueError):
    """The value is not a cursor this API handed out."""


def seal(sealer: Sealer, kind: str, payload: str) -> str:
    """The cursor text for ``kind`` and ``payload``."""
    return sealer.seal(f"{kind}:{payload}".encode())


def open_cursor(sealer: Sealer, text: object,
                max_length: int = MAX_CURSOR_LENGTH) -> tuple[str, str]:
    """``(kind, payload)`` of a cursor made by :func:`seal`; :class:`InvalidCursor` otherwise."""
    if not isinstance(text, str) or not 1 <= len(text) <= max_length or not text.isascii():
        raise InvalidCursor("malformed cursor")
    try:
        raw = sealer.open(text).decode("ascii")
    except (Unsealable, ValueError):
        raise InvalidCursor("malformed cursor") from None
    kind, sep, payload = raw.partition(":")
    if not sep:
        raise InvalidCursor("malformed cursor")
    return kind, payload
