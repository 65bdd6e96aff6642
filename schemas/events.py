"""Plate events: CloudEvents 1.0 structured-mode JSON on ``plates.events`` (contract section 2).

The event types are declared once, as typed dictionaries, and validated by one
pydantic-core schema (:data:`PLATE_EVENT_ADAPTER`, a discriminated union on
``type``) that returns the **normalized JSON object** of an event: no model
instances, the same object for ingest (which publishes it) and the registry
consumer (which fingerprints and folds it). :mod:`schemas.validation` wraps it
with the rejection reasons; :class:`Event` gives the helpers (time as a datetime,
content, fingerprint).

Normalized means: ``subject`` as the normalized plate key; ``time`` as pydantic
prints an aware datetime (the producer's offset kept, UTC as ``Z``, fractions to
microseconds); dates as ``YYYY-MM-DD``; ``null`` attributes and fields dropped;
defaults filled in (an owner's ``language``: ``en``; ``data`` of
``plate.device_unpaired``: ``{}``); keys in declaration order, extension
attributes last.

Decisions where the contract is silent (see also the package README notes):

* ``time`` keeps the producer's offset; ordering (:attr:`Event.sort_key`)
  and :meth:`Event.fingerprint` use the instant, so ``...T10:00:00-05:00``
  and ``...T15:00:00Z`` are the same time.
* ``data`` fields that are ``null`` mean "not given": ``{"reason": null}`` and
  ``{}`` are the same content. ``plate.owner_updated`` therefore cannot clear
  a field (send ``plate.transferred`` with the whole owner for that).
* ``plate.device_unpaired`` accepts ``data`` as ``{}``, ``null`` or absent.
* Unknown top-level attributes are CloudEvents extension attributes: allowed
  when the name matches ``^[a-z0-9]{1,20}$`` and the value is a JSON scalar;
  they are kept in the normalized object but are not part of the content.
* Free-text fields reject control characters; ids used in URLs and headers
  (``owner_id``, ``device_id``) are limited to ``[A-Za-z0-9._:@-]``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, Union

import orjson
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from schemas._types import (
    FORBIDDEN_TEXT_CHARS,
    MAX_YEAR,
    MIN_YEAR,
    DeviceId,
    OwnerId,
    Text50,
    Text100,
    Text128,
    Text200,
    Text500,
    Text512,
    has_forbidden_chars,
    iso_date,
    rfc3339,
    utc_iso,
)
from schemas.plates import PlateKey, parse_plate_key

__all__ = [
    "PlateClass",
    "SuspensionReason",
    "CancelReason",
    "Language",
    "EventType",
    "Vehicle",
    "Address",
    "Owner",
    "PlateIssuedData",
    "PlateRenewedData",
    "PlateSuspendedData",
    "PlateReinstatedData",
    "PlateStolenReportedData",
    "PlateRecoveredData",
    "PlateTransferredData",
    "PlateOwnerUpdatedData",
    "PlateCancelledData",
    "PlateDevicePairedData",
    "PlateDeviceUnpairedData",
    "PlateIssued",
    "PlateRenewed",
    "PlateSuspended",
    "PlateReinstated",
    "PlateStolenReported",
    "PlateRecovered",
    "PlateTransferred",
    "PlateOwnerUpdated",
    "PlateCancelled",
    "PlateDevicePaired",
    "PlateDeviceUnpaired",
    "PlateEvent",
    "PLATE_EVENT_ADAPTER",
    "EVENT_TYPES",
    "DATA_TYPES",
    "ENVELOPE_FIELDS",
    "EXTENSION_NAME_PATTERN",
    "Event",
]


class PlateClass(StrEnum):
    PASSENGER = "passenger"
    COMMERCIAL = "commercial"
    MOTORCYCLE = "motorcycle"
    TRAILER = "trailer"
    VANITY = "vanity"
    OTHER = "other"


class SuspensionReason(StrEnum):
    INSURANCE_LAPSED = "insurance_lapsed"
    UNPAID_FINES = "unpaid_fines"
    EMISSIONS_FAILED = "emissions_failed"
    COURT_ORDER = "court_order"
    ADMINISTRATIVE = "administrative"


class CancelReason(StrEnum):
    SURRENDERED = "surrendered"
    DESTROYED = "destroyed"
    REPLACED = "replaced"
    ADMINISTRATIVE = "administrative"


class Language(StrEnum):
    EN = "en"
    FR = "fr"


class EventType(StrEnum):
    PLATE_ISSUED = "plate.issued"
    PLATE_RENEWED = "plate.renewed"
    PLATE_SUSPENDED = "plate.suspended"
    PLATE_REINSTATED = "plate.reinstated"
    PLATE_STOLEN_REPORTED = "plate.stolen_reported"
    PLATE_RECOVERED = "plate.recovered"
    PLATE_TRANSFERRED = "plate.transferred"
    PLATE_OWNER_UPDATED = "plate.owner_updated"
    PLATE_CANCELLED = "plate.cancelled"
    PLATE_DEVICE_PAIRED = "plate.device_paired"
    PLATE_DEVICE_UNPAIRED = "plate.device_unpaired"


# --------------------------------------------------------------------------- parts

#: Configuration of every event part: unknown fields are errors, the input never appears
#: in an error, enum fields hold their string values.
_INPUT = ConfigDict(extra="forbid", hide_input_in_errors=True, use_enum_values=True)
#: Absent and ``null`` mean the same (the JSON Schema says ``"default": null``).
_NULL = Field(json_schema_extra={"default": None})

VIN_PATTERN = r"^[A-Za-z0-9]{1,32}$"
# Deliberately lenient: "basic" shape only, bounded (RFC 5321 path limit).
_NOT_IN_EMAIL = r"\s@" + FORBIDDEN_TEXT_CHARS
EMAIL_PATTERN = (
    rf"^[^{_NOT_IN_EMAIL}]{{1,64}}@[^{_NOT_IN_EMAIL}]+\.[^{_NOT_IN_EMAIL}]+$"
)
# E.164-ish: optional '+', digits, common separators; 4..15 digits checked below.
PHONE_PATTERN = r"^\+?[0-9][0-9 ().-]{2,30}$"


def _check_phone_digits(value: str) -> str:
    digits = sum(map(str.isdigit, value))
    if not 4 <= digits <= 15:
        raise PydanticCustomError("phone", "phone number must have 4 to 15 digits")
    return value


Email = Annotated[
    str,
    Strict(),
    Field(max_length=254, pattern=EMAIL_PATTERN, description="E-mail address (basic check only)"),
]
Phone = Annotated[
    str,
    Strict(),
    Field(
        max_length=32,
        pattern=PHONE_PATTERN,
        description="Phone number, E.164 preferred (+15551234567); spaces, '-', '.', '()' allowed",
    ),
    AfterValidator(_check_phone_digits),
]

_YEAR = r"(?:19[0-9]{2}|2[01][0-9]{2}|2200)"
#: Month and day, every day that exists in every year (29 February goes the long way).
_MONTH_DAY = (r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
              r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)")
#: Dates and times already in the form the validators return: returned as they are.
_NORMAL_DATE_RE = re.compile(rf"{_YEAR}-{_MONTH_DAY}", re.ASCII)
_NORMAL_TIME_RE = re.compile(
    rf"{_YEAR}-{_MONTH_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z", re.ASCII)
_DATETIME = TypeAdapter(datetime)


def _date_text(value: object) -> str:
    """A calendar date (``schemas._types.iso_date``'s rules) as ``YYYY-MM-DD``."""
    if type(value) is str and _NORMAL_DATE_RE.fullmatch(value):
        return value
    parsed = iso_date(value)
    return parsed.isoformat()


def _time_text(value: object) -> str:
    """An instant (``schemas._types.rfc3339``'s rules) as pydantic prints the datetime."""
    if type(value) is str and _NORMAL_TIME_RE.fullmatch(value):
        return value
    text: str = _DATETIME.dump_python(rfc3339(value), mode="json")
    return text


IsoDateText = Annotated[
    str,
    BeforeValidator(_date_text),
    Field(description=f"Calendar date YYYY-MM-DD, year {MIN_YEAR} to {MAX_YEAR}",
          json_schema_extra={"format": "date"}),
]
Rfc3339Text = Annotated[str, BeforeValidator(_time_text),
                        Field(json_schema_extra={"format": "date-time"})]


class Vehicle(TypedDict):
    """The vehicle a plate is issued for."""

    __pydantic_config__ = _INPUT  # type: ignore[misc]

    vin: Annotated[
        str, Strict(), Field(pattern=VIN_PATTERN, description="Vehicle identification number")
    ]
    make: Text100
    model: Text100
    year: Annotated[int, Strict(), Field(ge=1886, le=2100)]
    colour: Text50


class Address(TypedDict):
    """A postal address (paper notices are sent to it)."""

    __pydantic_config__ = _INPUT  # type: ignore[misc]

    lines: Annotated[list[Text100], Field(min_length=1, max_length=3)]
    city: Text100
    region: Text50
    postal_code: Text50
    country: Text50


class Owner(TypedDict):
    """The registered owner of a plate."""

    __pydantic_config__ = _INPUT  # type: ignore[misc]

    owner_id: OwnerId
    name: Text200
    email: NotRequired[Annotated[Email | None, _NULL]]
    phone: NotRequired[Annotated[Phone | None, _NULL]]
    language: NotRequired[Annotated[Language, Field(json_schema_extra={"default": "en"})]]
    address: NotRequired[Annotated[Address | None, _NULL]]


# --------------------------------------------------------------------------- data


class PlateIssuedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    plate_class: PlateClass
    expires_on: IsoDateText
    vehicle: Vehicle
    owner: Owner
    device_id: NotRequired[Annotated[DeviceId | None, _NULL]]


class PlateRenewedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    expires_on: IsoDateText


class PlateSuspendedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    reason: SuspensionReason
    detail: NotRequired[Annotated[Text500 | None, _NULL]]


class PlateReinstatedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    reason: NotRequired[Annotated[SuspensionReason | None, Field(
        description="The suspension reason lifted; absent lifts every suspension",
        json_schema_extra={"default": None})]]


class PlateStolenReportedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    agency: Text100
    report_id: Text100


class PlateRecoveredData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    agency: NotRequired[Annotated[Text100 | None, _NULL]]


class PlateTransferredData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    owner: Owner


_OWNER_UPDATE_FIELDS = ("name", "email", "phone", "language", "address")


class PlateOwnerUpdatedData(TypedDict):
    """Fields of the current owner to change; ``null`` or absent means unchanged."""

    __pydantic_config__ = _INPUT  # type: ignore[misc]

    name: NotRequired[Annotated[Text200 | None, _NULL]]
    email: NotRequired[Annotated[Email | None, _NULL]]
    phone: NotRequired[Annotated[Phone | None, _NULL]]
    language: NotRequired[Annotated[Language | None, _NULL]]
    address: NotRequired[Annotated[Address | None, _NULL]]


def _at_least_one(data: PlateOwnerUpdatedData) -> PlateOwnerUpdatedData:
    if all(data.get(name) is None for name in _OWNER_UPDATE_FIELDS):
        raise PydanticCustomError(
            "owner_update_empty",
            "at least one of name, email, phone, language, address is required")
    return data


class PlateCancelledData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    reason: CancelReason


class PlateDevicePairedData(TypedDict):
    __pydantic_config__ = _INPUT  # type: ignore[misc]

    device_id: DeviceId


class PlateDeviceUnpairedData(TypedDict):
    """No fields; ``data`` may be ``{}``, ``null`` or absent."""

    __pydantic_config__ = _INPUT  # type: ignore[misc]


# --------------------------------------------------------------------------- envelope

EXTENSION_NAME_PATTERN = r"^[a-z0-9]{1,20}$"
_EXTENSION_NAME_RE = re.compile(r"[a-z0-9]{1,20}", re.ASCII)
_PRINTABLE_NAME_RE = re.compile(r"[!-~]{1,40}", re.ASCII)
#: ``application/json`` with optional parameters of printable ASCII; checked in full.
_MEDIA_TYPE_RE = re.compile(r"application/json[ \t]*(;[ -~]*)?", re.ASCII | re.IGNORECASE)
MAX_CONTENT_TYPE_CHARS = 200
#: Integer extension values must fit in 64 bits (what every JSON peer can carry).
_INT64 = range(-(2**63), 2**63)


def extension_value_problem(value: object) -> str | None:
    """Why ``value`` cannot be a CloudEvents extension attribute value, or None.

    Values are JSON scalars: text without forbidden characters (as free text), finite
    numbers, integers within 64 bits, booleans, or ``null``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if has_forbidden_chars(value):
            return ("must not contain control characters (C0 or C1 controls, U+2028, U+2029 "
                    "or bidirectional controls such as U+202E)")
        return None
    if isinstance(value, int):
        return None if value in _INT64 else "must be an integer within 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    return "must be a string, number or boolean"


class FoldOrder:
    """Fold order and identity of an event kept as plain fields ``event_id``, ``time`` and
    ``source`` (the dataclasses of the consumer and the notices rules mix this in)."""

    __slots__ = ()
    event_id: str
    time: datetime
    source: str

    @property
    def sort_key(self) -> tuple[datetime, str, str]:
        """Fold order: (time, id) as the contract says, then source (the same id from two
        sources at the same time still folds in one order)."""
        return (self.time, self.event_id, self.source)

    @property
    def identity(self) -> tuple[str, str]:
        """What identifies an event (contract section 2): (source, id)."""
        return (self.source, self.event_id)




def _content_type(value: str | None) -> str | None:
    if value == "application/json":   # the common case
        return value
    if value is not None and (len(value) > MAX_CONTENT_TYPE_CHARS
                              or not _MEDIA_TYPE_RE.fullmatch(value)):
        raise PydanticCustomError(
            "datacontenttype",
            f"must be application/json (at most {MAX_CONTENT_TYPE_CHARS} characters, "
            "parameters in printable ASCII)")
    return value


def _null_data(value: object) -> object:
    return {} if value is None else value


SpecVersion = Annotated[Literal["1.0"],
                        Field(description="CloudEvents version, exactly the string '1.0'")]
EventId = Annotated[Text128, Field(description="Producer idempotency key, unique within its "
                                               "source: an event is identified by (source, id)")]
Source = Annotated[Text512, Field(description="CloudEvents source (URI-reference) of the "
                                              "producer")]
Time = Annotated[Rfc3339Text, Field(description="When the fact happened (RFC 3339 with offset)")]
ContentType = Annotated[str | None, AfterValidator(_content_type), Field(
    description="Optional; when given it must be application/json",
    json_schema_extra={"default": None})]

#: Envelope configuration: unknown attributes are extension attributes (checked by
#: :func:`_normalized`).
_ENVELOPE = ConfigDict(extra="allow", hide_input_in_errors=True, use_enum_values=True)


# One declaration per type (the envelope written out in each, in CloudEvents order: a
# TypedDict cannot narrow a field it inherits).
class PlateIssued(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.issued"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateIssuedData


class PlateRenewed(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.renewed"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateRenewedData


class PlateSuspended(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.suspended"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateSuspendedData


class PlateReinstated(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.reinstated"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateReinstatedData


class PlateStolenReported(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.stolen_reported"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateStolenReportedData


class PlateRecovered(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.recovered"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateRecoveredData


class PlateTransferred(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.transferred"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateTransferredData


class PlateOwnerUpdated(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.owner_updated"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: Annotated[PlateOwnerUpdatedData, AfterValidator(_at_least_one)]


class PlateCancelled(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.cancelled"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateCancelledData


class PlateDevicePaired(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.device_paired"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: PlateDevicePairedData


class PlateDeviceUnpaired(TypedDict):
    __pydantic_config__ = _ENVELOPE  # type: ignore[misc]

    specversion: SpecVersion
    id: EventId
    source: Source
    type: Literal["plate.device_unpaired"]
    time: Time
    subject: PlateKey
    datacontenttype: NotRequired[ContentType]
    data: NotRequired[Annotated[PlateDeviceUnpairedData, BeforeValidator(_null_data)]]


#: The envelope's attributes (any other top-level name is an extension attribute).
ENVELOPE_FIELDS = frozenset(PlateIssued.__annotations__)


def _without_nulls(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _owner(owner: dict[str, Any]) -> dict[str, Any]:
    """An owner with ``null`` fields dropped and its language filled in, in field order."""
    if None in owner.values():
        owner = _without_nulls(owner)
    if "language" not in owner:
        address = owner.pop("address", None)
        owner["language"] = "en"
        if address is not None:
            owner["address"] = address
    return owner


def _extension_check(event: dict[str, Any]) -> None:
    for name, value in event.items():
        if name in ENVELOPE_FIELDS:
            continue
        shown = repr(name) if _PRINTABLE_NAME_RE.fullmatch(name) else "attribute"
        if not _EXTENSION_NAME_RE.fullmatch(name):
            raise PydanticCustomError(
                "extension_name",
                "unknown attribute {name}: extension attribute names must match "
                + EXTENSION_NAME_PATTERN, {"name": shown})
        problem = extension_value_problem(value)
        if problem is not None:
            raise PydanticCustomError(
                "extension_value", "extension attribute {name} " + problem, {"name": shown})


def _normalized(event: dict[str, Any]) -> dict[str, Any]:
    """The validated event as its normalized JSON object (see the module docstring)."""
    if len(event) > len(ENVELOPE_FIELDS) or not event.keys() <= ENVELOPE_FIELDS:
        _extension_check(event)
    if None in event.values():
        event = _without_nulls(event)
    data = event.get("data")
    if data is None:  # plate.device_unpaired without data: {} in its place
        extras = {k: event.pop(k) for k in list(event) if k not in ENVELOPE_FIELDS}
        event["data"] = {}
        event.update(extras)
        return event
    if None in data.values():
        data = event["data"] = _without_nulls(data)
    owner = data.get("owner")
    if owner is not None and event["type"] != "plate.owner_updated":
        data["owner"] = _owner(owner)
    return event


PlateEvent = Annotated[
    Union[  # noqa: UP007 - keep the explicit Union for readability of the discriminated union
        PlateIssued,
        PlateRenewed,
        PlateSuspended,
        PlateReinstated,
        PlateStolenReported,
        PlateRecovered,
        PlateTransferred,
        PlateOwnerUpdated,
        PlateCancelled,
        PlateDevicePaired,
        PlateDeviceUnpaired,
    ],
    Field(discriminator="type"),
]

#: Validates any plate event into its normalized JSON object: the one event validator.
#: Prefer :func:`schemas.validation.parse_event_bytes` / ``parse_event_obj`` /
#: ``parse_event_objs``, which also classify rejections.
_NORMALIZED: Any = Annotated[PlateEvent, AfterValidator(_normalized)]
PLATE_EVENT_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(
    _NORMALIZED, config=ConfigDict(hide_input_in_errors=True))
#: The same for a list of events (one call for a whole batch).
PLATE_EVENTS_ADAPTER: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(
    list[_NORMALIZED], config=ConfigDict(hide_input_in_errors=True))

EVENT_TYPES: dict[EventType, Any] = {
    EventType.PLATE_ISSUED: PlateIssued,
    EventType.PLATE_RENEWED: PlateRenewed,
    EventType.PLATE_SUSPENDED: PlateSuspended,
    EventType.PLATE_REINSTATED: PlateReinstated,
    EventType.PLATE_STOLEN_REPORTED: PlateStolenReported,
    EventType.PLATE_RECOVERED: PlateRecovered,
    EventType.PLATE_TRANSFERRED: PlateTransferred,
    EventType.PLATE_OWNER_UPDATED: PlateOwnerUpdated,
    EventType.PLATE_CANCELLED: PlateCancelled,
    EventType.PLATE_DEVICE_PAIRED: PlateDevicePaired,
    EventType.PLATE_DEVICE_UNPAIRED: PlateDeviceUnpaired,
}

DATA_TYPES: dict[EventType, Any] = {
    EventType.PLATE_ISSUED: PlateIssuedData,
    EventType.PLATE_RENEWED: PlateRenewedData,
    EventType.PLATE_SUSPENDED: PlateSuspendedData,
    EventType.PLATE_REINSTATED: PlateReinstatedData,
    EventType.PLATE_STOLEN_REPORTED: PlateStolenReportedData,
    EventType.PLATE_RECOVERED: PlateRecoveredData,
    EventType.PLATE_TRANSFERRED: PlateTransferredData,
    EventType.PLATE_OWNER_UPDATED: PlateOwnerUpdatedData,
    EventType.PLATE_CANCELLED: PlateCancelledData,
    EventType.PLATE_DEVICE_PAIRED: PlateDevicePairedData,
    EventType.PLATE_DEVICE_UNPAIRED: PlateDeviceUnpairedData,
}


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event: its normalized JSON object ``obj`` (what is published) and its
    ``time`` as an aware datetime."""

    obj: dict[str, Any]
    time: datetime

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Event:
        """The event of a normalized object (:data:`PLATE_EVENT_ADAPTER`'s result)."""
        return cls(obj, datetime.fromisoformat(obj["time"]))

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def type(self) -> str:
        return str(self.obj["type"])

    @property
    def event_type(self) -> EventType:
        return EventType(self.obj["type"])

    @property
    def source(self) -> str:
        return str(self.obj["source"])

    @property
    def subject(self) -> str:
        """The normalized plate key."""
        return str(self.obj["subject"])

    plate_key = subject

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.obj["data"]
        return data

    @property
    def datacontenttype(self) -> str | None:
        return self.obj.get("datacontenttype")

    @property
    def extensions(self) -> dict[str, Any]:
        """The extension attributes (not content)."""
        return {k: v for k, v in self.obj.items() if k not in ENVELOPE_FIELDS}

    @property
    def jurisdiction(self) -> str:
        return parse_plate_key(self.subject)[0]

    @property
    def plate(self) -> str:
        return parse_plate_key(self.subject)[1]

    @property
    def sort_key(self) -> tuple[datetime, str]:
        """Fold order of the contract: ``(time, id)``; compares instants across offsets."""
        return (self.time, self.id)

    def content(self) -> dict[str, Any]:
        """The content that defines duplicates, in canonical JSON-ready form.

        ``type``, ``source``, ``time`` (UTC, microseconds, ``Z``), normalized
        ``subject`` and ``data`` with defaults filled in and ``null`` fields
        dropped. Extension attributes, ``id``, ``specversion`` and
        ``datacontenttype`` are not content.
        """
        obj = self.obj
        return {"type": obj["type"], "source": obj["source"], "time": utc_iso(self.time),
                "subject": obj["subject"], "data": obj["data"]}

    def fingerprint(self) -> str:
        """SHA-256 hex of :meth:`content` as canonical JSON (sorted keys, no spaces).

        Two events whose content is equal after normalization have equal
        fingerprints; a duplicate ``id`` with another fingerprint is an
        ``id_conflict``.
        """
        return self.content_and_fingerprint()[1]

    def content_and_fingerprint(self) -> tuple[dict[str, Any], str]:
        """:meth:`content` and :meth:`fingerprint` together (the content built once)."""
        content = self.content()
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return content, hashlib.sha256(canonical).hexdigest()

    def to_json(self) -> bytes:
        """Structured-mode CloudEvents JSON of this (normalized) event."""
        return orjson.dumps(self.obj)

