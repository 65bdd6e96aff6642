"""Shared constrained types for the schema models (internal; re-exported where public).

Every validator here raises :class:`pydantic_core.PydanticCustomError` with a
message that describes the rule, never the input, so error texts are safe to log.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

#: Config for models that describe inputs: unknown fields are errors and the
#: input value never appears in ``str(ValidationError)``.
STRICT_INPUT = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)
#: Config for output (view) models: unknown fields are errors so that, for
#: example, owner data can never be smuggled into an enforcement view.
OUTPUT = ConfigDict(extra="forbid", hide_input_in_errors=True)

# No C0 control characters and no DEL in free text: keeps CR/LF out of mail
# headers, SMS bodies and log lines.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int) -> Any:
    return Field(min_length=1, max_length=max_length, pattern=NO_CONTROL_PATTERN)


# Bounded, non-empty free text without control characters.
Text50 = Annotated[str, Strict(), _text(50)]
Text100 = Annotated[str, Strict(), _text(100)]
Text128 = Annotated[str, Strict(), _text(128)]
Text200 = Annotated[str, Strict(), _text(200)]
Text500 = Annotated[str, Strict(), _text(500)]
Text512 = Annotated[str, Strict(), _text(512)]

#: Identifiers used in URLs and headers: owner ids, device ids.
SAFE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"

OwnerId = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN, description="Owner identifier"),
]
DeviceId = Annotated[
    str,
    Strict(),
    Field(
        min_length=1,
        max_length=128,
        pattern=SAFE_ID_PATTERN,
        description="Smart plate device identifier",
    ),
]


_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _iso_date(value: object) -> object:
    if isinstance(value, datetime):
        raise PydanticCustomError("iso_date", "invalid date, expected YYYY-MM-DD")
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE_RE.fullmatch(value):
        raise PydanticCustomError("iso_date", "invalid date, expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("iso_date", "invalid date, expected YYYY-MM-DD") from None


#: A calendar date; from JSON only the string form ``YYYY-MM-DD`` is accepted.
IsoDate = Annotated[
    date,
    BeforeValidator(_iso_date),
    Field(description="Calendar date YYYY-MM-DD"),
]

_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
RFC3339_MESSAGE = "must be RFC 3339 with a UTC offset, e.g. 2026-11-24T15:04:05Z"


def _rfc3339(value: object) -> object:
    parsed = _parse_rfc3339(value)
    try:
        parsed.astimezone(UTC)  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
    except OverflowError:
        raise PydanticCustomError("rfc3339_time", RFC3339_MESSAGE) from None
    return parsed


def _parse_rfc3339(value: object) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError("rfc3339_time", RFC3339_MESSAGE)
        return value
    if not isinstance(value, str) or len(value) > 40:
        raise PydanticCustomError("rfc3339_time", RFC3339_MESSAGE)
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        raise PydanticCustomError("rfc3339_time", RFC3339_MESSAGE)
    day, clock, fraction, offset = match.groups()
    # Python keeps microseconds: extra digits of a nanosecond timestamp are truncated.
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    except ValueError:
        raise PydanticCustomError("rfc3339_time", RFC3339_MESSAGE) from None


#: A timezone-aware instant; from JSON only RFC 3339 strings with an offset are accepted.
Rfc3339Datetime = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    Field(description="RFC 3339 timestamp with offset, e.g. 2026-11-24T15:04:05Z"),
]


def utc_iso(value: datetime) -> str:
    """Canonical UTC text of an aware datetime: ``2026-11-24T15:04:05.000000Z``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
