"""Plate events: CloudEvents 1.0 structured-mode JSON on ``plates.events`` (contract section 2).

Decisions where the contract is silent (see also the package README notes):

* ``time`` keeps the producer's offset; ordering (:attr:`BaseEvent.sort_key`)
  and :meth:`BaseEvent.fingerprint` use the instant, so ``...T10:00:00-05:00``
  and ``...T15:00:00Z`` are the same time.
* ``data`` fields that are ``null`` mean "not given": ``{"reason": null}`` and
  ``{}`` are the same content. ``plate.owner_updated`` therefore cannot clear
  a field (send ``plate.transferred`` with the whole owner for that).
* ``plate.device_unpaired`` accepts ``data`` as ``{}``, ``null`` or absent.
* Unknown top-level attributes are CloudEvents extension attributes: allowed
  when the name matches ``^[a-z0-9]{1,20}$`` and the value is a JSON scalar;
  they are kept on the model (``model_extra``) but are not part of the content.
* Free-text fields reject control characters; ids used in URLs and headers
  (``owner_id``, ``device_id``) are limited to ``[A-Za-z0-9._:@-]``.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas._types import (
    FORBIDDEN_TEXT_CHARS,
    STRICT_INPUT,
    DeviceId,
    IsoDate,
    OwnerId,
    Rfc3339Datetime,
    Text50,
    Text100,
    Text128,
    Text200,
    Text500,
    Text512,
    has_forbidden_chars,
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
    "Owner",
    "EventData",
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
    "BaseEvent",
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
    "EVENT_MODELS",
    "DATA_MODELS",
    "EXTENSION_NAME_PATTERN",
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

VIN_PATTERN = r"^[A-Za-z0-9]{1,32}$"
# Deliberately lenient: "basic" shape only, bounded (RFC 5321 path limit).
_NOT_IN_EMAIL = r"\s@" + FORBIDDEN_TEXT_CHARS
EMAIL_PATTERN = (
    rf"^[^{_NOT_IN_EMAIL}]{{1,64}}@[^{_NOT_IN_EMAIL}]+\.[^{_NOT_IN_EMAIL}]+$"
)
# E.164-ish: optional '+', digits, common separators; 4..15 digits checked below.
PHONE_PATTERN = r"^\+?[0-9][0-9 ().-]{2,30}$"

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
]


def _check_phone_digits(value: str | None) -> str | None:
    if value is not None:
        digits = sum(map(str.isdigit, value))
        if not 4 <= digits <= 15:
            raise PydanticCustomError("phone", "phone number must have 4 to 15 digits")
    return value


class Vehicle(BaseModel):
    """The vehicle a plate is issued for."""

    model_config = STRICT_INPUT

    vin: Annotated[
        str, Strict(), Field(pattern=VIN_PATTERN, description="Vehicle identification number")
    ]
    make: Text100
    model: Text100
    year: Annotated[int, Strict(), Field(ge=1886, le=2100)]
    colour: Text50


class Address(BaseModel):
    """A postal address (paper notices are sent to it)."""

    model_config = STRICT_INPUT

    lines: list[Text100] = Field(min_length=1, max_length=3)
    city: Text100
    region: Text50
    postal_code: Text50
    country: Text50


class Owner(BaseModel):
    """The registered owner of a plate."""

    model_config = STRICT_INPUT

    owner_id: OwnerId
    name: Text200
    email: Email | None = None
    phone: Phone | None = None
    language: Language = Language.EN
    address: Address | None = None

    _phone = field_validator("phone")(_check_phone_digits)


# --------------------------------------------------------------------------- data


class EventData(BaseModel):
    """Base of every ``data`` model: unknown fields are rejected."""

    model_config = STRICT_INPUT


class PlateIssuedData(EventData):
    plate_class: PlateClass
    expires_on: IsoDate
    vehicle: Vehicle
    owner: Owner
    device_id: DeviceId | None = None


class PlateRenewedData(EventData):
    expires_on: IsoDate


class PlateSuspendedData(EventData):
    reason: SuspensionReason
    detail: Text500 | None = None


class PlateReinstatedData(EventData):
    reason: SuspensionReason | None = Field(
        default=None, description="The suspension reason lifted; absent lifts every suspension"
    )


class PlateStolenReportedData(EventData):
    agency: Text100
    report_id: Text100


class PlateRecoveredData(EventData):
    agency: Text100 | None = None


class PlateTransferredData(EventData):
    owner: Owner


class PlateOwnerUpdatedData(EventData):
    """Fields of the current owner to change; ``null`` or absent means unchanged."""

    name: Text200 | None = None
    email: Email | None = None
    phone: Phone | None = None
    language: Language | None = None
    address: Address | None = None

    _phone = field_validator("phone")(_check_phone_digits)

    @model_validator(mode="after")
    def _at_least_one(self) -> PlateOwnerUpdatedData:
        if all(getattr(self, name) is None
               for name in ("name", "email", "phone", "language", "address")):
            raise PydanticCustomError(
                "owner_update_empty",
                "at least one of name, email, phone, language, address is required"
            )
        return self


class PlateCancelledData(EventData):
    reason: CancelReason


class PlateDevicePairedData(EventData):
    device_id: DeviceId


class PlateDeviceUnpairedData(EventData):
    """No fields; ``data`` may be ``{}``, ``null`` or absent."""


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


class BaseEvent(BaseModel):
    """CloudEvents 1.0 envelope shared by every plate event type.

    Instances are immutable. ``subject`` is the normalized plate key.
    """

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)

    specversion: Literal["1.0"] = Field(description="CloudEvents version, exactly the string '1.0'")
    id: Text128 = Field(description="Producer idempotency key, unique within its source: an "
                                    "event is identified by (source, id)")
    source: Text512 = Field(description="CloudEvents source (URI-reference) of the producer")
    type: str
    time: Rfc3339Datetime = Field(description="When the fact happened (RFC 3339 with offset)")
    subject: PlateKey
    datacontenttype: str | None = Field(
        default=None, description="Optional; when given it must be application/json"
    )
    data: EventData

    @field_validator("specversion", mode="before")
    @classmethod
    def _specversion(cls, value: object) -> object:
        if value != "1.0" or not isinstance(value, str):
            raise PydanticCustomError("specversion", "must be '1.0'")
        return value

    @field_validator("datacontenttype")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_CONTENT_TYPE_CHARS
                                  or not _MEDIA_TYPE_RE.fullmatch(value)):
            raise PydanticCustomError(
                "datacontenttype",
                f"must be application/json (at most {MAX_CONTENT_TYPE_CHARS} characters, "
                "parameters in printable ASCII)")
        return value

    @model_validator(mode="after")
    def _extensions(self) -> BaseEvent:
        for name, value in (self.model_extra or {}).items():
            shown = repr(name) if _PRINTABLE_NAME_RE.fullmatch(name) else "attribute"
            if not _EXTENSION_NAME_RE.fullmatch(name):
                raise PydanticCustomError(
                    "extension_name",
                    "unknown attribute {name}: extension attribute names must match "
                    + EXTENSION_NAME_PATTERN,
                    {"name": shown},
                )
            problem = extension_value_problem(value)
            if problem is not None:
                raise PydanticCustomError(
                    "extension_value", "extension attribute {name} " + problem, {"name": shown}
                )
        return self

    # -- helpers -------------------------------------------------------------

    @property
    def event_type(self) -> EventType:
        return EventType(self.type)

    @property
    def plate_key(self) -> str:
        """The normalized plate key; the same as ``subject``."""
        return self.subject

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
        return {
            "type": self.type,
            "source": self.source,
            "time": utc_iso(self.time),
            "subject": self.subject,
            "data": self.data.model_dump(mode="json", exclude_none=True),
        }

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
        """Structured-mode CloudEvents JSON of this (normalized) event, ``null`` fields omitted."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


class PlateIssued(BaseEvent):
    type: Literal["plate.issued"]
    data: PlateIssuedData


class PlateRenewed(BaseEvent):
    type: Literal["plate.renewed"]
    data: PlateRenewedData


class PlateSuspended(BaseEvent):
    type: Literal["plate.suspended"]
    data: PlateSuspendedData


class PlateReinstated(BaseEvent):
    type: Literal["plate.reinstated"]
    data: PlateReinstatedData


class PlateStolenReported(BaseEvent):
    type: Literal["plate.stolen_reported"]
    data: PlateStolenReportedData


class PlateRecovered(BaseEvent):
    type: Literal["plate.recovered"]
    data: PlateRecoveredData


class PlateTransferred(BaseEvent):
    type: Literal["plate.transferred"]
    data: PlateTransferredData


class PlateOwnerUpdated(BaseEvent):
    type: Literal["plate.owner_updated"]
    data: PlateOwnerUpdatedData


class PlateCancelled(BaseEvent):
    type: Literal["plate.cancelled"]
    data: PlateCancelledData


class PlateDevicePaired(BaseEvent):
    type: Literal["plate.device_paired"]
    data: PlateDevicePairedData


class PlateDeviceUnpaired(BaseEvent):
    type: Literal["plate.device_unpaired"]
    data: PlateDeviceUnpairedData = Field(default_factory=PlateDeviceUnpairedData)

    @field_validator("data", mode="before")
    @classmethod
    def _null_data(cls, value: object) -> object:
        return {} if value is None else value


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

#: Validates any plate event. Prefer :func:`schemas.validation.parse_event_bytes`
#: / :func:`schemas.validation.parse_event_obj`, which also classify rejections.
PLATE_EVENT_ADAPTER: TypeAdapter[BaseEvent] = TypeAdapter(
    PlateEvent, config=ConfigDict(hide_input_in_errors=True)
)

EVENT_MODELS: dict[EventType, type[BaseEvent]] = {
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

DATA_MODELS: dict[EventType, type[EventData]] = {
    event_type: model.model_fields["data"].annotation  # type: ignore[misc]
    for event_type, model in EVENT_MODELS.items()
}
