"""Shared constrained types for the schema models (internal; re-exported where public).

Every validator here raises :class:`pydantic_core.PydanticCustomError` with a
message that describes the rule, never the input, so error texts are safe to log.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

#: Config for models that describe inputs: unknown fields are errors and the
#: input value never appears in ``str(ValidationError)``.
STRICT_INPUT = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)
#: Config for output (view) models: unknown fields are errors so that, for
#: example, owner data can never be smuggled into an enforcement view.
OUTPUT = ConfigDict(extra="forbid", hide_input_in_errors=True)

#: Characters never accepted in free text: C0 controls, DEL and C1 controls
#: (NEL U+0085 among them), the line and paragraph separators U+2028/U+2029, the
#: Unicode bidirectional controls (ALM U+061C, LRM/RLM U+200E/U+200F, the
#: embeddings and overrides U+202A..U+202E, the isolates U+2066..U+2069), and lone
#: surrogates. Keeps line breaks out of mail headers, SMS bodies and log lines, and
#: text that reorders itself (RLO) out of names shown to people.
FORBIDDEN_TEXT_CHARS = (
    r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
)
NO_CONTROL_PATTERN = rf"^[^{FORBIDDEN_TEXT_CHARS}]*$"
_FORBIDDEN_TEXT_RE = re.compile(f"[{FORBIDDEN_TEXT_CHARS}" + r"\ud800-\udfff]")


def has_forbidden_chars(text: str) -> bool:
    """True when ``text`` holds a control, bidirectional-control or separator character
    (see :data:`FORBIDDEN_TEXT_CHARS`) or a lone surrogate."""
    return _FORBIDDEN_TEXT_RE.search(text) is not None


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

#: The years accepted in dates and instants. PostgreSQL stores far more, but
#: ``0001-01-01T00:00:00Z`` and ``9999-12-31T23:59:59.999999Z`` are the
#: sentinels asyncpg turns into ``-infinity`` / ``infinity`` (read back as naive
#: datetimes), day arithmetic near year 1 or 9999 overflows in Python, and no
#: plate fact happened before 1900 or will happen after 2200.
MIN_YEAR = 1900
MAX_YEAR = 2200
MIN_DATE = date(MIN_YEAR, 1, 1)
MAX_DATE = date(MAX_YEAR, 12, 31)
#: Instants are accepted from MIN_TIME (included) to MAX_TIME (excluded), in UTC.
MIN_TIME = datetime(MIN_YEAR, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(MAX_YEAR + 1, 1, 1, tzinfo=UTC)
#: UTC offsets accepted in instants: the extremes of real time zones.
MIN_OFFSET = timedelta(hours=-12)
MAX_OFFSET = timedelta(hours=14)
DATE_MESSAGE = f"invalid date, expected YYYY-MM-DD with a year from {MIN_YEAR} to {MAX_YEAR}"


def date_in_range(value: date) -> bool:
    return MIN_DATE <= value <= MAX_DATE


def time_in_range(value: datetime) -> bool:
    """True for a timezone-aware instant from :data:`MIN_TIME` up to :data:`MAX_TIME`."""
    offset = value.utcoffset()
    return offset is not None and MIN_TIME <= value < MAX_TIME


def iso_date(value: object) -> date:
    """A calendar date from 1900 to 2200 (``YYYY-MM-DD`` text or a date), or a
    ``PydanticCustomError``."""
    if isinstance(value, datetime):
        raise PydanticCustomError("iso_date", DATE_MESSAGE)
    if isinstance(value, date):
        parsed = value
    elif not isinstance(value, str) or not _ISO_DATE_RE.fullmatch(value):
        raise PydanticCustomError("iso_date", DATE_MESSAGE)
    else:
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("iso_date", DATE_MESSAGE) from None
    if not date_in_range(parsed):
        raise PydanticCustomError("iso_date", DATE_MESSAGE)
    return parsed


#: A calendar date from 1900-01-01 to 2200-12-31; from JSON only the string form
#: ``YYYY-MM-DD`` is accepted.
IsoDate = Annotated[
    date,
    BeforeValidator(iso_date),
    Field(description=f"Calendar date YYYY-MM-DD, year {MIN_YEAR} to {MAX_YEAR}"),
]

_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:[0-5]\d)",
    re.ASCII,
)
RFC3339_MESSAGE = "must be RFC 3339 with a UTC offset, e.g. 2026-11-24T15:04:05Z"
TIME_RANGE_MESSAGE = (
    f"must be from {MIN_YEAR}-01-01T00:00:00Z to before {MAX_YEAR + 1}-01-01T00:00:00Z"
)
OFFSET_MESSAGE = "UTC offset must be from -12:00 to +14:00"
LEAP_SECOND_MESSAGE = "seconds must be 00 to 59 (leap seconds are not accepted)"


def rfc3339(value: object) -> datetime:
    """An aware instant (RFC 3339 text or an aware datetime) within the accepted years and
    offsets, or a ``PydanticCustomError``."""
    parsed = _parse_rfc3339(value)
    offset = parsed.utcoffset()
    if offset is None or not MIN_OFFSET <= offset <= MAX_OFFSET:
        raise PydanticCustomError("rfc3339_time", OFFSET_MESSAGE)
    if not time_in_range(parsed):
        raise PydanticCustomError("rfc3339_time", TIME_RANGE_MESSAGE)
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
        message = LEAP_SECOND_MESSAGE if clock.endswith(":60") else RFC3339_MESSAGE
        raise PydanticCustomError("rfc3339_time", message) from None


#: A timezone-aware instant from 1900 to 2200 with an offset from -12:00 to +14:00;
#: from JSON only RFC 3339 strings with an offset are accepted (no leap seconds).
Rfc3339Datetime = Annotated[
    datetime,
    BeforeValidator(rfc3339),
    Field(description="RFC 3339 timestamp with offset, e.g. 2026-11-24T15:04:05Z; "
          f"from {MIN_YEAR}-01-01T00:00:00Z to before {MAX_YEAR + 1}-01-01T00:00:00Z, "
          "offset from -12:00 to +14:00"),
]


def utc_iso(value: datetime) -> str:
    """Canonical UTC text of an aware datetime: ``2026-11-24T15:04:05.000000Z``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
